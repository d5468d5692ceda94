package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one error in a configuration file.
type Problem struct {
	File string
	// Line is 0 when the problem has no place in the file.
	Line int
	// Key is the dotted path of the key, such as listeners[0].tls.
	Key     string
	Message string
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Problems is every error found in one configuration file, in file order.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads, decodes, completes with defaults and validates the file at
// path. Relative paths in the file are relative to the file's directory.
// The error is a Problems value for anything wrong inside the file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data as the file named name, applies defaults and
// validates the result.
func Parse(name string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{yamlProblem(name, err)}
	}

	cfg := &Config{Path: name}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, typeProblems(name, te, lineFinder{root: &root})
		}
		return nil, Problems{yamlProblem(name, err)}
	}

	cfg.applyDefaults()
	dir, err := filepath.Abs(filepath.Dir(name))
	if err != nil {
		return nil, fmt.Errorf("resolving config directory: %w", err)
	}
	cfg.resolvePaths(dir)
	if ps := cfg.validate(lineFinder{root: &root}); len(ps) > 0 {
		for i := range ps {
			ps[i].File = name
		}
		return nil, ps
	}
	return cfg, nil
}

// resolvePaths expands environment variables such as
// $CREDENTIALS_DIRECTORY in file paths and makes them absolute against dir.
func (c *Config) resolvePaths(dir string) {
	resolve := func(p *string) {
		if *p == "" {
			return
		}
		*p = os.ExpandEnv(*p)
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}

	resolve(&c.Store.Path)
	if c.Store.KeyFile == DefaultKeyFile || c.Store.AdminSocket == DefaultAdminSocket {
		// The defaults sit next to the database.
		dbDir := filepath.Dir(c.Store.Path)
		if c.Store.KeyFile == DefaultKeyFile {
			c.Store.KeyFile = filepath.Join(dbDir, DefaultKeyFile)
		}
		if c.Store.AdminSocket == DefaultAdminSocket {
			c.Store.AdminSocket = filepath.Join(dbDir, DefaultAdminSocket)
		}
	}
	resolve(&c.Store.KeyFile)
	resolve(&c.Store.AdminSocket)
	for i := range c.Listeners {
		resolve(&c.Listeners[i].CertFile)
		resolve(&c.Listeners[i].KeyFile)
	}
	for name, p := range c.Providers {
		resolve(&p.ClientSecretFile)
		resolve(&p.Upstream.CAFile)
		c.Providers[name] = p
	}
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblems turns yaml.v3's "line N: ..." messages into Problems.
func typeProblems(name string, te *yaml.TypeError, lines lineFinder) Problems {
	var ps Problems
	for _, msg := range te.Errors {
		p := Problem{File: name, Message: msg}
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Message = rewordYAML(m[2])
			if !unknownField.MatchString(m[2]) {
				p.Key = lines.keyAt(p.Line)
			}
		}
		ps = append(ps, p)
	}
	return ps
}

var unknownField = regexp.MustCompile(`^field (\S+) not found in type (\S+)$`)

var wrongType = regexp.MustCompile("^cannot unmarshal !!\\w+ `(.*)` into (\\S+)$")

func rewordYAML(msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("unknown key %q", m[1])
	}
	if m := wrongType.FindStringSubmatch(msg); m != nil {
		switch m[2] {
		case "time.Duration":
			return fmt.Sprintf("invalid duration %q: use a number and a unit, such as 30s, 5m or 1h", m[1])
		case "int", "int64":
			return fmt.Sprintf("invalid number %q", m[1])
		case "bool":
			return fmt.Sprintf("invalid value %q: use true or false", m[1])
		}
	}
	return msg
}

var syntaxLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlProblem(name string, err error) Problem {
	p := Problem{File: name, Message: err.Error()}
	if m := syntaxLine.FindStringSubmatch(err.Error()); m != nil {
		p.Line, _ = strconv.Atoi(m[1])
		p.Message = m[2]
	}
	return p
}

// lineFinder finds the line of a key path in the decoded YAML tree.
type lineFinder struct {
	root *yaml.Node
}

// line returns the line of the value at path, such as ["listeners", 0,
// "tls"], or of its nearest ancestor present in the file, or 0.
func (f lineFinder) line(path ...any) int {
	n := f.root
	if n == nil || len(n.Content) == 0 {
		return 0
	}
	n = n.Content[0]
	line := 0
	for _, step := range path {
		next, keyLine := child(n, step)
		if next == nil {
			if keyLine > 0 {
				return keyLine
			}
			return line
		}
		n = next
		line = n.Line
		if keyLine > 0 {
			line = keyLine
		}
	}
	return line
}

func child(n *yaml.Node, step any) (*yaml.Node, int) {
	switch s := step.(type) {
	case string:
		if n.Kind != yaml.MappingNode {
			return nil, 0
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == s {
				return n.Content[i+1], n.Content[i].Line
			}
		}
	case int:
		if n.Kind == yaml.SequenceNode && s < len(n.Content) {
			return n.Content[s], 0
		}
	}
	return nil, 0
}

// keyAt returns the dotted path of the key whose value starts on line,
// such as limits.read_timeout, or "" when there is none.
func (f lineFinder) keyAt(line int) string {
	if f.root == nil || len(f.root.Content) == 0 {
		return ""
	}
	return findKey(f.root.Content[0], nil, line)
}

func findKey(n *yaml.Node, path []any, line int) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := append(append([]any(nil), path...), k.Value)
			if v.Line == line && v.Kind == yaml.ScalarNode {
				return keyName(p)
			}
			if found := findKey(v, p, line); found != "" {
				return found
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if found := findKey(c, append(append([]any(nil), path...), i), line); found != "" {
				return found
			}
		}
	}
	return ""
}

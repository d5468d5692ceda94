package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
)

// TLSVersion returns the crypto/tls constant for "1.0" to "1.3".
func TLSVersion(s string) (uint16, bool) {
	switch s {
	case "1.0":
		return tls.VersionTLS10, true
	case "1.1":
		return tls.VersionTLS11, true
	case "1.2":
		return tls.VersionTLS12, true
	case "1.3":
		return tls.VersionTLS13, true
	}
	return 0, false
}

// IsLoopback reports whether the host part of a listen address is a
// loopback address or "localhost". An empty host listens on every
// interface, so it is not loopback.
func IsLoopback(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

type validator struct {
	lines    lineFinder
	problems Problems
}

func (v *validator) add(path []any, format string, args ...any) {
	v.problems = append(v.problems, Problem{
		Line:    v.lines.line(path...),
		Key:     keyName(path),
		Message: fmt.Sprintf(format, args...),
	})
}

func keyName(path []any) string {
	s := ""
	for _, step := range path {
		switch x := step.(type) {
		case string:
			if s != "" {
				s += "."
			}
			s += x
		case int:
			s += "[" + strconv.Itoa(x) + "]"
		}
	}
	return s
}

func at(path ...any) []any { return path }

// validate checks the whole configuration and returns every problem.
func (c *Config) validate(lines lineFinder) Problems {
	v := &validator{lines: lines}

	seen := map[string]bool{}
	for i, l := range c.Listeners {
		if seen[l.Address] {
			v.add(at("listeners", i, "address"), "address %s is listed twice", l.Address)
		}
		seen[l.Address] = true
		v.listener(i, l)
	}

	if len(c.Providers) == 0 {
		v.add(at("providers"), "no provider is configured; add one named google or microsoft")
	}
	names := make([]string, 0, len(c.Providers))
	for name := range c.Providers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		v.provider(name, c.Providers[name])
	}

	v.limits(c.Limits)
	v.throttle(c.Throttle)
	if c.Pool.MaxConns < 0 {
		v.add(at("pool", "max_conns"), "must be positive, not %d", c.Pool.MaxConns)
	}
	if c.Pool.IdleTimeout < 0 {
		v.add(at("pool", "idle_timeout"), "must not be negative")
	}
	if c.Pool.RefreshMargin < 0 {
		v.add(at("pool", "refresh_margin"), "must not be negative")
	}

	v.trustedClients(c.TrustedClients)

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add(at("log", "level"), "invalid level %q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		v.add(at("log", "format"), "invalid format %q: use text or json", c.Log.Format)
	}

	sort.SliceStable(v.problems, func(i, j int) bool {
		return v.problems[i].Line < v.problems[j].Line
	})
	return v.problems
}

func (v *validator) listener(i int, l Listener) {
	if _, port, err := net.SplitHostPort(l.Address); err != nil {
		v.add(at("listeners", i, "address"), "invalid address %q: use host:port, such as %s", l.Address, DefaultListenAddress)
	} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.add(at("listeners", i, "address"), "invalid port %q", port)
	}

	switch l.TLS {
	case TLSNone:
		if !IsLoopback(l.Address) && !l.InsecureAuth {
			v.add(at("listeners", i, "tls"), "address %s is not loopback, so AUTH would cross the network in plaintext: set tls to starttls or implicit, or set insecure_auth: true", l.Address)
		}
	case TLSStartTLS, TLSImplicit:
		certOK, keyOK := false, false
		if l.CertFile == "" {
			v.add(at("listeners", i, "cert_file"), "missing: tls %s needs cert_file and key_file", l.TLS)
		} else {
			certOK = v.readable(at("listeners", i, "cert_file"), l.CertFile)
		}
		if l.KeyFile == "" {
			v.add(at("listeners", i, "key_file"), "missing: tls %s needs cert_file and key_file", l.TLS)
		} else {
			keyOK = v.readable(at("listeners", i, "key_file"), l.KeyFile)
		}
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile); err != nil {
				v.add(at("listeners", i, "cert_file"), "invalid certificate or key: %v", err)
			}
		}
	default:
		v.add(at("listeners", i, "tls"), "invalid mode %q: use none, starttls or implicit", l.TLS)
	}

	if _, ok := TLSVersion(l.MinTLSVersion); !ok {
		v.add(at("listeners", i, "min_tls_version"), "invalid version %q: use 1.0, 1.1, 1.2 or 1.3", l.MinTLSVersion)
	}
}

func (v *validator) provider(name string, p Provider) {
	key := func(k ...any) []any { return append([]any{"providers", name}, k...) }

	switch p.Kind {
	case KindGoogle, KindMicrosoft:
	case "":
		v.add(key(), "missing kind: set kind to google or microsoft")
	default:
		v.add(key("kind"), "invalid kind %q: use google or microsoft", p.Kind)
	}
	if p.ClientID == "" {
		v.add(key("client_id"), "missing: copy the OAuth client id from the provider's console")
	}
	if p.ClientSecret != "" && p.ClientSecretFile != "" {
		v.add(key("client_secret_file"), "set client_secret or client_secret_file, not both")
	}
	if p.ClientSecretFile != "" {
		v.readable(key("client_secret_file"), p.ClientSecretFile)
	}
	if p.Kind == KindGoogle && p.ClientSecret == "" && p.ClientSecretFile == "" {
		v.add(key("client_secret"), "missing: Google desktop clients send their client secret; set client_secret or client_secret_file")
	}

	for _, u := range []struct{ key, value string }{
		{"auth_url", p.AuthURL},
		{"token_url", p.TokenURL},
		{"device_auth_url", p.DeviceAuthURL},
		{"userinfo_url", p.UserinfoURL},
	} {
		if u.value == "" {
			continue
		}
		parsed, err := url.Parse(u.value)
		if err != nil || (parsed.Scheme != "https" && parsed.Scheme != "http") || parsed.Host == "" {
			v.add(key(u.key), "invalid URL %q: use an absolute https URL", u.value)
		}
	}

	if _, _, err := net.SplitHostPort(p.Upstream.Address); err != nil {
		v.add(key("upstream", "address"), "invalid address %q: use host:port, such as %s", p.Upstream.Address, GoogleSMTPAddress)
	}
	switch p.Upstream.TLS {
	case TLSImplicit, TLSStartTLS:
	default:
		v.add(key("upstream", "tls"), "invalid mode %q: use implicit (port 465) or starttls (port 587)", p.Upstream.TLS)
	}
	if p.Upstream.CAFile != "" && v.readable(key("upstream", "ca_file"), p.Upstream.CAFile) {
		if pem, err := os.ReadFile(p.Upstream.CAFile); err == nil && !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.add(key("upstream", "ca_file"), "%s contains no PEM certificate", p.Upstream.CAFile)
		}
	}
}

func (v *validator) limits(l Limits) {
	if l.MaxMessageBytes < 0 {
		v.add(at("limits", "max_message_bytes"), "must be positive")
	}
	if l.MaxRecipients < 0 {
		v.add(at("limits", "max_recipients"), "must be positive")
	}
	if l.MaxConnections < 0 {
		v.add(at("limits", "max_connections"), "must not be negative; 0 means no limit")
	}
	for _, d := range []struct {
		key   string
		value any
		ok    bool
	}{
		{"read_timeout", l.ReadTimeout, l.ReadTimeout > 0},
		{"write_timeout", l.WriteTimeout, l.WriteTimeout > 0},
		{"upstream_timeout", l.UpstreamTimeout, l.UpstreamTimeout > 0},
		{"upstream_data_timeout", l.UpstreamDataTimeout, l.UpstreamDataTimeout > 0},
		{"dial_timeout", l.DialTimeout, l.DialTimeout > 0},
		{"token_timeout", l.TokenTimeout, l.TokenTimeout > 0},
		{"shutdown_grace", l.ShutdownGrace, l.ShutdownGrace > 0},
	} {
		if !d.ok {
			v.add(at("limits", d.key), "must be a positive duration, such as 30s, not %v", d.value)
		}
	}
}

func (v *validator) throttle(t Throttle) {
	if t.FreeFailures < 0 || t.LockoutAfter < 0 {
		v.add(at("throttle"), "failure counts must not be negative")
	}
	if t.BaseDelay < 0 || t.MaxDelay < 0 || t.Lockout < 0 || t.Window < 0 {
		v.add(at("throttle"), "durations must not be negative")
	}
	if t.BaseDelay > t.MaxDelay {
		v.add(at("throttle", "base_delay"), "base_delay %v is longer than max_delay %v", t.BaseDelay, t.MaxDelay)
	}
}

// readable reports whether file can be opened, and adds a problem when
// it cannot.
func (v *validator) readable(path []any, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		v.add(path, "cannot read %s: %v", file, err)
		return false
	}
	f.Close()
	return true
}

// trustedClients parses the networks of each entry into its prefixes and
// rejects entries that would make the bridge an open relay or map one
// address to two users.
func (v *validator) trustedClients(tcs []TrustedClient) {
	type owned struct {
		prefix netip.Prefix
		entry  int
	}
	var seen []owned
	for i := range tcs {
		tc := &tcs[i]
		tc.prefixes = nil
		if tc.User == "" {
			v.add(at("trusted_clients", i, "user"), "missing: name the local user that these clients send as")
		}
		for j, network := range tc.Networks {
			key := at("trusted_clients", i, "networks", j)
			prefix, err := parsePrefix(network)
			if err != nil {
				v.add(key, "invalid network %q: use a CIDR prefix such as 10.1.2.3/32, or an address", network)
				continue
			}
			if prefix.Bits() == 0 {
				v.add(key, "network %s covers every address, which would make the bridge an open relay; list the clients' own addresses", network)
				continue
			}
			for _, o := range seen {
				if o.prefix.Overlaps(prefix) {
					v.add(key, "network %s overlaps %s of trusted_clients[%d]; an address may send as one user only", network, o.prefix, o.entry)
				}
			}
			seen = append(seen, owned{prefix, i})
			tc.prefixes = append(tc.prefixes, prefix)
		}
	}
}

// parsePrefix parses a CIDR prefix or a single address, which becomes a
// prefix of its full length.
func parsePrefix(s string) (netip.Prefix, error) {
	if addr, err := netip.ParseAddr(s); err == nil {
		if addr.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("address %s has a zone", s)
		}
		addr = addr.Unmap()
		return netip.PrefixFrom(addr, addr.BitLen()), nil
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if prefix.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("prefix %s is IPv4-mapped IPv6; use the IPv4 form", s)
	}
	return prefix.Masked(), nil
}

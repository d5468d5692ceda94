package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/auth"
)

// Load modes. The first two open one connection per message, as a
// printer or a cron job does. The warm modes send every message on one
// authenticated session and time only the transaction.
const (
	modeDirect     = "direct"
	modeBridge     = "bridge"
	modeDirectWarm = "direct-warm"
	modeBridgeWarm = "bridge-warm"
)

// loadSpec is the work of one load process, read from its standard input.
type loadSpec struct {
	Mode     string `json:"mode"`
	Addr     string `json:"addr"`
	Clients  int    `json:"clients"`
	Messages int    `json:"messages"`
	Size     int    `json:"size"`

	// For the direct modes: the fake Gmail's CA, and how to get an
	// access token from the fake provider.
	CAFile       string `json:"ca_file,omitempty"`
	TokenURL     string `json:"token_url,omitempty"`
	ClientID     string `json:"client_id,omitempty"`
	ClientSecret string `json:"client_secret,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// loadResult is the outcome of one load process, written on its standard
// output.
type loadResult struct {
	Messages   int           `json:"messages"`
	Failed     int           `json:"failed"`
	FirstError string        `json:"first_error,omitempty"`
	Wall       time.Duration `json:"wall"`
	// Latencies of every message, sorted.
	Latencies []time.Duration `json:"latencies"`
	// CPU and PeakRSS of the load process itself.
	CPU     time.Duration `json:"cpu"`
	PeakRSS int64         `json:"peak_rss"`
}

// sender sends messages in one of the load modes.
type sender struct {
	spec  loadSpec
	tls   *tls.Config
	token string
}

// runLoad reads a loadSpec from standard input, sends the messages and
// writes a loadResult to standard output.
func runLoad() error {
	var spec loadSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("reading load spec: %w", err)
	}
	s := &sender{spec: spec}
	if strings.HasPrefix(spec.Mode, "direct") {
		if err := s.prepareDirect(); err != nil {
			return err
		}
	}

	res := s.run()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		res.CPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Not ru_maxrss: Go starts a child with a clone that shares the
	// parent's memory until exec, and Linux then takes that memory's
	// high-water mark, the parent's. VmHWM covers this process alone.
	if u, err := readUsage(os.Getpid()); err == nil {
		res.PeakRSS = u.PeakRSS
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// prepareDirect gets the one access token that every direct client uses,
// as a program that sends without the bridge keeps one per account.
func (s *sender) prepareDirect() error {
	pem, err := os.ReadFile(s.spec.CAFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s contains no certificate", s.spec.CAFile)
	}
	s.tls = &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}

	conf := &oauth2.Config{
		ClientID:     s.spec.ClientID,
		ClientSecret: s.spec.ClientSecret,
		Endpoint:     oauth2.Endpoint{TokenURL: s.spec.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
	tok, err := conf.TokenSource(context.Background(), &oauth2.Token{RefreshToken: s.spec.RefreshToken}).Token()
	if err != nil {
		return fmt.Errorf("getting an access token: %w", err)
	}
	s.token = tok.AccessToken
	return nil
}

// run starts the clients at once and collects their results.
func (s *sender) run() loadResult {
	var (
		mu  sync.Mutex
		res loadResult
		wg  sync.WaitGroup
	)
	record := func(d time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			return
		}
		res.Messages++
		res.Latencies = append(res.Latencies, d)
	}

	start := time.Now()
	for client := range s.spec.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.client(client, record)
		}()
	}
	wg.Wait()
	res.Wall = time.Since(start)
	slices.Sort(res.Latencies)
	return res
}

// client sends the messages of one client and records each.
func (s *sender) client(client int, record func(time.Duration, error)) {
	switch s.spec.Mode {
	case modeDirect, modeBridge:
		for i := range s.spec.Messages {
			start := time.Now()
			err := s.sendOne(message(client, i, s.spec.Size), func() { record(time.Since(start), nil) })
			if err != nil {
				record(0, err)
			}
		}
	case modeDirectWarm, modeBridgeWarm:
		c, err := s.login()
		if err != nil {
			record(0, err)
			return
		}
		defer c.Close()
		for i := range s.spec.Messages {
			start := time.Now()
			err := transaction(c, message(client, i, s.spec.Size))
			record(time.Since(start), err)
		}
		c.Quit()
	default:
		record(0, fmt.Errorf("unknown mode %q", s.spec.Mode))
	}
}

// sendOne connects, logs in, sends msg and quits. accepted runs when the
// reply to the end of data arrives, before QUIT.
func (s *sender) sendOne(msg []byte, accepted func()) error {
	c, err := s.login()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := transaction(c, msg); err != nil {
		return err
	}
	accepted()
	return c.Quit()
}

// login connects and authenticates: STARTTLS and XOAUTH2 with the fake
// Gmail, or AUTH PLAIN over plaintext loopback with the bridge.
func (s *sender) login() (*smtp.Client, error) {
	if strings.HasPrefix(s.spec.Mode, "direct") {
		c, err := smtp.DialStartTLS(s.spec.Addr, s.tls)
		if err != nil {
			return nil, fmt.Errorf("connecting with STARTTLS: %w", err)
		}
		if err := c.Auth(&auth.XOAuth2Client{User: benchAccount, Token: s.token}); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH XOAUTH2: %w", err)
		}
		return c, nil
	}
	c, err := smtp.Dial(s.spec.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	if err := c.Auth(sasl.NewPlainClient("", benchUser, benchPassword)); err != nil {
		c.Close()
		return nil, fmt.Errorf("AUTH PLAIN: %w", err)
	}
	return c, nil
}

// transaction sends MAIL, RCPT and DATA and waits for the reply to the
// end of data.
func transaction(c *smtp.Client, msg []byte) error {
	if err := c.Mail(benchAccount, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt("recipient@example.org", nil); err != nil {
		return fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("writing data: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of data: %w", err)
	}
	return nil
}

// message returns a message of exactly size bytes, or of its headers
// alone if they are longer: headers, then lines of 76 characters.
func message(client, i, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Bench <%s>\r\nTo: <recipient@example.org>\r\n", benchAccount)
	fmt.Fprintf(&b, "Subject: bench %d-%d\r\nMessage-ID: <bench-%d-%d@bridge-bench.example>\r\n", client, i, client, i)
	b.WriteString("Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := strings.Repeat("0123456789", 8)[:76] + "\r\n"
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	if pad := size - b.Len(); pad >= 3 {
		b.WriteString(strings.Repeat("x", pad-2) + "\r\n")
	}
	return b.Bytes()
}

// errLoadFailed means some messages of a run were not accepted.
var errLoadFailed = errors.New("messages failed")

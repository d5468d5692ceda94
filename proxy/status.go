package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/config"
)

// Status is a snapshot of a running server.
type Status struct {
	Started   time.Time
	Listeners []ListenerStatus
	// Sessions counts the sessions of every listener, including those of
	// listeners that a reload removed.
	Sessions int64
	// Accounts lists the accounts that sent or failed since the start,
	// sorted by address.
	Accounts []AccountActivity
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	// Address is the bound address; Configured is the address in the
	// configuration, which may have port 0.
	Address     string
	Configured  string
	TLS         string
	Connections int64
}

// AccountActivity is the record of one account's messages and failures
// since the server started.
type AccountActivity struct {
	Account  string
	LastSent time.Time
	Sent     int64
	// LastError is the cause of the latest failure that the client got a
	// reply for, with LastErrorAt its time.
	LastError   string
	LastErrorAt time.Time
}

// Status returns the server's state.
func (s *Server) Status() Status {
	s.mu.Lock()
	st := Status{Started: s.started, Sessions: s.sessions.Load()}
	for _, l := range s.listeners {
		_, lc := l.current()
		st.Listeners = append(st.Listeners, ListenerStatus{
			Address:     l.tcp.Addr().String(),
			Configured:  lc.Address,
			TLS:         lc.TLS,
			Connections: l.conns.Load(),
		})
	}
	s.mu.Unlock()
	st.Accounts = s.activity.snapshot()
	return st
}

// activity records per account when it last sent and failed. It is safe
// for concurrent use.
type activity struct {
	mu       sync.Mutex
	accounts map[string]*AccountActivity
}

func newActivity() *activity {
	return &activity{accounts: make(map[string]*AccountActivity)}
}

func (a *activity) entry(account string) *AccountActivity {
	e, ok := a.accounts[account]
	if !ok {
		e = &AccountActivity{Account: account}
		a.accounts[account] = e
	}
	return e
}

func (a *activity) sent(account string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(account)
	e.LastSent = time.Now()
	e.Sent++
}

func (a *activity) failed(account, cause string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.entry(account)
	e.LastError = cause
	e.LastErrorAt = time.Now()
}

func (a *activity) snapshot() []AccountActivity {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AccountActivity, 0, len(a.accounts))
	for _, e := range a.accounts {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Account < out[j].Account })
	return out
}

// CheckOptions are the parts CheckAccount needs.
type CheckOptions struct {
	Tokens   *auth.Tokens
	Provider *auth.Provider
	Account  string
	Limits   config.Limits
	Log      *slog.Logger
}

// CheckAccount refreshes the account's access token, then connects to the
// provider's submission server and authenticates with XOAUTH2, and quits.
// It returns the expiry of the new access token. The error is what a
// session would have got: a *auth.ConsentError, a *auth.TokenError, or a
// failure to reach or log in to the submission server.
func CheckAccount(ctx context.Context, o CheckOptions) (time.Time, error) {
	expiry, err := o.Tokens.Refresh(ctx, o.Provider.Name, o.Account)
	if err != nil {
		return time.Time{}, err
	}
	hostname, err := os.Hostname()
	if err != nil || hostname == "" {
		hostname = "localhost"
	}
	d := &dialer{
		tokens:   o.Tokens,
		limits:   func() config.Limits { return o.Limits },
		hostname: hostname,
		log:      o.Log,
	}
	up, err := d.connect(ctx, o.Provider, o.Account)
	if err != nil {
		return expiry, err
	}
	up.close()
	return expiry, nil
}

// CheckAccount runs CheckAccount with the server's tokens and current
// settings.
func (s *Server) CheckAccount(ctx context.Context, provider, account string) (time.Time, error) {
	p, ok := s.provider(provider)
	if !ok {
		return time.Time{}, fmt.Errorf("provider %q is not configured", provider)
	}
	return CheckAccount(ctx, CheckOptions{
		Tokens:   s.tokens,
		Provider: p,
		Account:  account,
		Limits:   s.cfg().Limits,
		Log:      s.log,
	})
}

package main

import (
	"errors"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/store"
)

// statusRoutes adds the status and check routes of the admin socket.
func (d *daemon) statusRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("GET /v1/check/store", d.handleCheckStore)
	mux.HandleFunc("POST /v1/check/online", d.handleCheckOnline)
}

// statusReply is the body of GET /v1/status.
type statusReply struct {
	Version       string           `json:"version"`
	PID           int              `json:"pid"`
	Config        string           `json:"config"`
	Started       time.Time        `json:"started"`
	UptimeSeconds int64            `json:"uptime_seconds"`
	Sessions      int64            `json:"sessions"`
	Listeners     []listenerStatus `json:"listeners"`
	Accounts      []accountStatus  `json:"accounts"`
}

type listenerStatus struct {
	Address     string `json:"address"`
	Configured  string `json:"configured"`
	TLS         string `json:"tls"`
	Connections int64  `json:"connections"`
}

// Consent states of an account in accountStatus.
const (
	consentGranted      = "granted"
	consentRevoked      = "revoked"
	consentMissingScope = "missing mail scope"
	consentUnknown      = "not checked since start"
)

type accountStatus struct {
	Account  string   `json:"account"`
	Provider string   `json:"provider"`
	Users    []string `json:"users"`
	Consent  string   `json:"consent"`
	// LastRefresh and TokenExpiry are those of the cached access token,
	// zero until the account is first used.
	LastRefresh time.Time `json:"last_refresh,omitzero"`
	TokenExpiry time.Time `json:"token_expiry,omitzero"`
	LastSent    time.Time `json:"last_sent,omitzero"`
	Sent        int64     `json:"sent"`
	// LastError is the cause of the latest failure that a client got a
	// reply for; TokenError is that of the latest failed refresh, until
	// a refresh succeeds.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	TokenError  string    `json:"token_error,omitempty"`
}

func (d *daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	reply, err := d.status()
	if err != nil {
		d.log.Error("admin status", "err", err)
		admin.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	admin.WriteJSON(w, http.StatusOK, reply)
}

func (d *daemon) status() (statusReply, error) {
	st := d.server.Status()
	reply := statusReply{
		Version:       versionString(),
		PID:           os.Getpid(),
		Config:        d.config().Path,
		Started:       st.Started,
		UptimeSeconds: int64(time.Since(st.Started).Seconds()),
		Sessions:      st.Sessions,
		Listeners:     []listenerStatus{},
	}
	for _, l := range st.Listeners {
		reply.Listeners = append(reply.Listeners, listenerStatus(l))
	}

	accounts, err := d.store.Accounts()
	if err != nil {
		return reply, err
	}
	users, err := d.store.Users()
	if err != nil {
		return reply, err
	}
	tokens := make(map[string]auth.AccountState)
	for _, s := range d.tokens.State() {
		tokens[s.Account] = s
	}
	activity := make(map[string]int)
	for i, a := range st.Accounts {
		activity[a.Account] = i
	}

	reply.Accounts = []accountStatus{}
	for _, a := range accounts {
		as := accountStatus{Account: a.Address, Provider: a.Provider, Users: usersOf(users, a.Address)}
		ts, refreshed := tokens[a.Address]
		as.LastRefresh, as.TokenExpiry = ts.LastRefresh, ts.Expiry
		if ts.LastError != nil {
			as.TokenError = ts.LastError.Error()
		}
		as.Consent = d.consent(a, ts, refreshed)
		if i, ok := activity[a.Address]; ok {
			act := st.Accounts[i]
			as.LastSent, as.Sent = act.LastSent, act.Sent
			as.LastError, as.LastErrorAt = act.LastError, act.LastErrorAt
		}
		reply.Accounts = append(reply.Accounts, as)
	}
	return reply, nil
}

// consent returns the consent state of the account: revoked after
// invalid_grant, missing mail scope when the stored grant lacks it,
// granted once a refresh succeeded.
func (d *daemon) consent(a store.Account, ts auth.AccountState, refreshed bool) string {
	var ce *auth.ConsentError
	if errors.As(ts.LastError, &ce) {
		return consentRevoked
	}
	if p, ok := d.providers()[a.Provider]; ok && len(a.Scopes) > 0 && !slices.Contains(a.Scopes, p.MailScope()) {
		return consentMissingScope
	}
	if refreshed && !ts.LastRefresh.IsZero() {
		return consentGranted
	}
	return consentUnknown
}

func usersOf(users []store.User, account string) []string {
	names := []string{}
	for _, u := range users {
		if u.Account == account {
			names = append(names, u.Name)
		}
	}
	return names
}

func (d *daemon) handleCheckStore(w http.ResponseWriter, r *http.Request) {
	report, err := readStoreReport(d.store)
	if err != nil {
		d.log.Error("admin store check", "err", err)
		admin.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	report.Path = d.config().Store.Path
	admin.WriteJSON(w, http.StatusOK, report)
}

func (d *daemon) handleCheckOnline(w http.ResponseWriter, r *http.Request) {
	report, err := readStoreReport(d.store)
	if err != nil {
		d.log.Error("admin online check", "err", err)
		admin.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	results := checkAccounts(r.Context(), report, d.server.CheckAccount)
	for _, res := range results {
		if res.Problem != "" {
			d.log.Warn("online check failed", "account", res.Account, "problem", res.Problem)
		}
	}
	admin.WriteJSON(w, http.StatusOK, results)
}

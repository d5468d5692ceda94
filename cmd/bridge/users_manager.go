package main

import (
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/store"
)

// authorizeRequest stores a user with a new grant for its account. It is
// the body of PUT /users/{name} on the admin socket.
type authorizeRequest struct {
	Provider     string   `json:"provider"`
	Account      string   `json:"account"`
	RefreshToken string   `json:"refresh_token"`
	Scopes       []string `json:"scopes"`
	// PasswordHash is the argon2id hash of a new user's password, and of
	// an existing user's unless KeepPassword is set.
	PasswordHash string `json:"password_hash"`
	KeepPassword bool   `json:"keep_password"`
	// AllowedSenders replaces the user's list. Nil keeps an existing
	// user's list, and gives a new user none.
	AllowedSenders *[]string `json:"allowed_senders"`
}

// authorizeResult describes the changes made by an authorizeRequest.
type authorizeResult struct {
	Created     bool `json:"created"`
	PasswordSet bool `json:"password_set"`
	// TokenReplaced is set when the account already had a refresh token.
	TokenReplaced bool `json:"token_replaced"`
	// SharedWith lists the other users that send as the account.
	SharedWith []string `json:"shared_with"`
	// PreviousAccount is the account the user sent as before, if that
	// was another one.
	PreviousAccount        string   `json:"previous_account"`
	PreviousAccountRemoved bool     `json:"previous_account_removed"`
	AllowedSenders         []string `json:"allowed_senders"`
}

// passwordRequest sets a user's password. It is the body of PUT
// /users/{name}/password.
type passwordRequest struct {
	PasswordHash string `json:"password_hash"`
	// AllowedSenders replaces the user's list; nil keeps it.
	AllowedSenders *[]string `json:"allowed_senders"`
}

// removeResult describes the changes made by removing a user.
type removeResult struct {
	Account        string   `json:"account"`
	AccountRemoved bool     `json:"account_removed"`
	RemainingUsers []string `json:"remaining_users"`
}

// userInfo is one row of bridge users list.
type userInfo struct {
	Name           string    `json:"name"`
	Account        string    `json:"account"`
	Provider       string    `json:"provider"`
	AllowedSenders []string  `json:"allowed_senders"`
	Created        time.Time `json:"created"`
	LastUsed       time.Time `json:"last_used"`
	TokenState     string    `json:"token_state"`
}

// Token states in bridge users list, besides the text of a refresh error.
const (
	tokenOK      = "ok"
	tokenStored  = "stored"
	tokenMissing = "no token"
)

// userManager changes users in the store. serve runs one behind the admin
// socket, and the CLI runs one on the store it opened when no server
// runs. Its methods are safe for concurrent use.
type userManager struct {
	store *store.Store
	// tokens is the running server's token cache, or nil in the CLI.
	tokens *auth.Tokens
	// providers reports whether a provider is configured; nil accepts
	// any.
	providers func(name string) bool

	// mu serializes changes, so what a method reads before its write is
	// still true when it writes. The proxy writes only refresh tokens and
	// last-use times, which no method here depends on.
	mu sync.Mutex
}

// badRequest is an invalid request; the admin socket returns it with
// status 400.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func (m *userManager) authorize(name string, req authorizeRequest) (authorizeResult, error) {
	if err := req.validate(name, m.providers); err != nil {
		return authorizeResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	var res authorizeResult
	u, err := m.store.User(name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		res.Created = true
		u = store.User{Name: name}
	case err != nil:
		return res, err
	}
	if !res.Created && u.Account != req.Account {
		res.PreviousAccount = u.Account
	}
	if _, err := m.store.Account(req.Account); err == nil {
		res.TokenReplaced = true
	}
	res.SharedWith, err = m.usersOf(req.Account, name)
	if err != nil {
		return res, err
	}

	if res.Created && req.PasswordHash == "" {
		return res, badRequest{fmt.Sprintf("user %s does not exist, so it needs a password hash", name)}
	}
	if res.Created || !req.KeepPassword {
		u.PasswordHash = req.PasswordHash
		res.PasswordSet = true
	}
	if req.AllowedSenders != nil {
		u.AllowedSenders = *req.AllowedSenders
	}
	u.Account, u.Provider = req.Account, req.Provider
	// A zero LastUsed keeps the stored one, which a login may have
	// changed since the read above.
	u.LastUsed = time.Time{}
	err = m.store.Authorize(u, store.Account{
		Address:      req.Account,
		Provider:     req.Provider,
		RefreshToken: req.RefreshToken,
		Scopes:       req.Scopes,
	})
	if err != nil {
		return res, err
	}
	res.AllowedSenders = u.AllowedSenders

	if res.PreviousAccount != "" {
		_, err := m.store.Account(res.PreviousAccount)
		res.PreviousAccountRemoved = errors.Is(err, store.ErrNotFound)
	}
	m.forget(req.Account)
	if res.PreviousAccountRemoved {
		m.forget(res.PreviousAccount)
	}
	return res, nil
}

func (m *userManager) setPassword(name string, req passwordRequest) error {
	if err := checkUserName(name); err != nil {
		return err
	}
	if err := checkPasswordHash(req.PasswordHash); err != nil {
		return err
	}
	if req.AllowedSenders != nil {
		if err := checkSenders(*req.AllowedSenders); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	u, err := m.store.User(name)
	if err != nil {
		return err
	}
	u.PasswordHash = req.PasswordHash
	if req.AllowedSenders != nil {
		u.AllowedSenders = *req.AllowedSenders
	}
	u.LastUsed = time.Time{}
	// The token is untouched, so the cache keeps it. The proxy reads the
	// hash on every AUTH, so the old password fails from now on.
	return m.store.PutUser(u)
}

func (m *userManager) remove(name string) (removeResult, error) {
	if err := checkUserName(name); err != nil {
		return removeResult{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()

	u, err := m.store.User(name)
	if err != nil {
		return removeResult{}, err
	}
	res := removeResult{Account: u.Account}
	res.AccountRemoved, err = m.store.DeleteUser(name)
	if err != nil {
		return res, err
	}
	if res.AccountRemoved {
		m.forget(u.Account)
	}
	res.RemainingUsers, err = m.usersOf(u.Account, name)
	return res, err
}

func (m *userManager) list() ([]userInfo, error) {
	users, err := m.store.Users()
	if err != nil {
		return nil, err
	}
	accounts, err := m.store.Accounts()
	if err != nil {
		return nil, err
	}
	stored := make(map[string]bool, len(accounts))
	for _, a := range accounts {
		stored[a.Address] = true
	}
	states := map[string]auth.AccountState{}
	if m.tokens != nil {
		for _, s := range m.tokens.State() {
			states[s.Account] = s
		}
	}

	infos := make([]userInfo, 0, len(users))
	for _, u := range users {
		state, seen := states[u.Account]
		infos = append(infos, userInfo{
			Name:           u.Name,
			Account:        u.Account,
			Provider:       u.Provider,
			AllowedSenders: u.AllowedSenders,
			Created:        u.Created,
			LastUsed:       u.LastUsed,
			TokenState:     tokenState(u, stored[u.Account], state, seen),
		})
	}
	return infos, nil
}

// tokenState describes the account's token for bridge users list: "no
// token", "stored" while no refresh has run since the server started (or
// when no server runs), "ok" after a successful refresh, or else the last
// refresh error.
func tokenState(u store.User, stored bool, s auth.AccountState, seen bool) string {
	if !stored {
		return tokenMissing
	}
	if !seen || (s.LastError == nil && s.LastRefresh.IsZero()) {
		return tokenStored
	}
	var ce *auth.ConsentError
	if errors.As(s.LastError, &ce) {
		return "consent revoked or expired: run bridge authorize " + u.Name
	}
	var te *auth.TokenError
	if errors.As(s.LastError, &te) {
		if te.Code != "" {
			return "refresh failed: " + te.Code
		}
		return "refresh failed: " + te.Err.Error()
	}
	if s.LastError != nil {
		return "refresh failed: " + s.LastError.Error()
	}
	return tokenOK
}

// usersOf returns the users other than except that send as account.
func (m *userManager) usersOf(account, except string) ([]string, error) {
	users, err := m.store.Users()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, u := range users {
		if u.Account == account && u.Name != except {
			names = append(names, u.Name)
		}
	}
	return names, nil
}

// forget drops the server's cached tokens of an account whose refresh
// token changed or went, so the next login reads the store.
func (m *userManager) forget(account string) {
	if m.tokens != nil {
		m.tokens.Forget(account)
	}
}

func (r authorizeRequest) validate(name string, providers func(string) bool) error {
	if err := checkUserName(name); err != nil {
		return err
	}
	switch {
	case r.Provider == "":
		return badRequest{"missing provider"}
	case providers != nil && !providers(r.Provider):
		return badRequest{fmt.Sprintf("provider %q is not configured in the running server", r.Provider)}
	case r.Account == "":
		return badRequest{"missing account"}
	case r.RefreshToken == "":
		return badRequest{"missing refresh token"}
	}
	if !r.KeepPassword || r.PasswordHash != "" {
		if err := checkPasswordHash(r.PasswordHash); err != nil {
			return err
		}
	}
	if r.AllowedSenders != nil {
		return checkSenders(*r.AllowedSenders)
	}
	return nil
}

// maxUserNameBytes bounds user names; a longer one is no printer's login.
const maxUserNameBytes = 255

// checkUserName accepts a non-empty UTF-8 name without spaces or control
// characters, which senders could not type and logs would garble.
func checkUserName(name string) error {
	switch {
	case name == "":
		return badRequest{"missing user name"}
	case len(name) > maxUserNameBytes:
		return badRequest{fmt.Sprintf("user name has %d bytes, more than the maximum of %d", len(name), maxUserNameBytes)}
	case !utf8.ValidString(name):
		return badRequest{fmt.Sprintf("user name %q is not valid UTF-8", name)}
	}
	for _, r := range name {
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return badRequest{fmt.Sprintf("user name %q contains a space or control character", name)}
		}
	}
	return nil
}

func checkPasswordHash(hash string) error {
	if !strings.HasPrefix(hash, "$argon2id$") {
		return badRequest{"missing or invalid password hash: expected an argon2id PHC string"}
	}
	return nil
}

// checkSenders accepts plain addresses, without display names or angle
// brackets, as they appear in MAIL FROM.
func checkSenders(senders []string) error {
	for _, s := range senders {
		a, err := mail.ParseAddress(s)
		if err != nil || a.Name != "" || a.Address != s {
			return badRequest{fmt.Sprintf("invalid sender address %q: expected a plain address such as scanner@example.com", s)}
		}
	}
	if i := firstDuplicate(senders); i >= 0 {
		return badRequest{fmt.Sprintf("sender address %q is given twice", senders[i])}
	}
	return nil
}

func firstDuplicate(list []string) int {
	for i := range list {
		if slices.ContainsFunc(list[:i], func(s string) bool { return strings.EqualFold(s, list[i]) }) {
			return i
		}
	}
	return -1
}

package store

import (
	"fmt"
	"log/slog"
)

// redacted returns what a secret field prints as: a placeholder, or ""
// for an empty secret, so that a missing one still shows.
func redacted(secret string) string {
	if secret == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue makes slog print the account without its refresh token.
func (a Account) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("address", a.Address),
		slog.String("provider", a.Provider),
		slog.Any("scopes", a.Scopes),
		slog.String("refresh_token", redacted(a.RefreshToken)),
	)
}

// String formats the account without its refresh token, for %v and %+v.
func (a Account) String() string {
	return fmt.Sprintf("{address:%s provider:%s scopes:%v refresh_token:%s}",
		a.Address, a.Provider, a.Scopes, redacted(a.RefreshToken))
}

// GoString formats the account for %#v, also without its refresh token.
func (a Account) GoString() string { return "store.Account" + a.String() }

// LogValue makes slog print the user without its password hash, which an
// attacker could try to crack offline.
func (u User) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", u.Name),
		slog.String("account", u.Account),
		slog.String("provider", u.Provider),
		slog.Any("allowed_senders", u.AllowedSenders),
		slog.String("password_hash", redacted(u.PasswordHash)),
	)
}

// String formats the user without its password hash, for %v and %+v.
func (u User) String() string {
	return fmt.Sprintf("{name:%s account:%s provider:%s allowed_senders:%v password_hash:%s}",
		u.Name, u.Account, u.Provider, u.AllowedSenders, redacted(u.PasswordHash))
}

// GoString formats the user for %#v, also without its password hash.
func (u User) GoString() string { return "store.User" + u.String() }

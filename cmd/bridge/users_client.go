package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/store"
)

// userAPI changes users through a running serve or, when none runs, in
// the store directly.
type userAPI interface {
	authorize(ctx context.Context, name string, req authorizeRequest) (authorizeResult, error)
	setPassword(ctx context.Context, name string, req passwordRequest) error
	remove(ctx context.Context, name string) (removeResult, error)
	list(ctx context.Context) ([]userInfo, error)
	// where describes where changes go, for the command's output.
	where() string
	close() error
}

// errNoStore is returned by openUsers when neither a server nor a
// database exists yet.
var errNoStore = errors.New("no user has been authorized yet")

// openUsers returns the user API of the server that listens on the
// configured admin socket, or else of the store opened directly. Without
// create, a store that does not exist yet is errNoStore instead of a new
// empty database.
func openUsers(cfg *config.Config, create bool) (userAPI, error) {
	c, err := admin.Dial(cfg.Store.AdminSocket)
	if err == nil {
		return &adminUsers{client: c}, nil
	}

	if !create {
		if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w (no database at %s)", errNoStore, cfg.Store.Path)
		}
	}
	key, err := store.LoadOrCreateKey(cfg.Store.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("sealing key: %w", err)
	}
	st, err := store.Open(cfg.Store.Path, key)
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("%w: a bridge serve holds the database, but its admin socket %s is unreachable; "+
			"check that serve runs with this config, or stop it and try again", err, cfg.Store.AdminSocket)
	}
	if err != nil {
		return nil, err
	}
	return &localUsers{m: &userManager{store: st}}, nil
}

// localUsers is the store opened by the CLI.
type localUsers struct{ m *userManager }

func (l *localUsers) authorize(_ context.Context, name string, req authorizeRequest) (authorizeResult, error) {
	return l.m.authorize(name, req)
}

func (l *localUsers) setPassword(_ context.Context, name string, req passwordRequest) error {
	return l.m.setPassword(name, req)
}

func (l *localUsers) remove(_ context.Context, name string) (removeResult, error) {
	return l.m.remove(name)
}

func (l *localUsers) list(context.Context) ([]userInfo, error) { return l.m.list() }

func (l *localUsers) where() string {
	return "No bridge serve is running, so the change was written to " + l.m.store.Path() + "."
}

func (l *localUsers) close() error { return l.m.store.Close() }

// adminUsers is a running server, reached through its admin socket.
type adminUsers struct{ client *admin.Client }

func userPath(name string) string { return "/users/" + url.PathEscape(name) }

func (a *adminUsers) authorize(ctx context.Context, name string, req authorizeRequest) (authorizeResult, error) {
	var res authorizeResult
	err := a.client.Call(ctx, http.MethodPut, userPath(name), req, &res)
	return res, adminError(err)
}

func (a *adminUsers) setPassword(ctx context.Context, name string, req passwordRequest) error {
	return adminError(a.client.Call(ctx, http.MethodPut, userPath(name)+"/password", req, nil))
}

func (a *adminUsers) remove(ctx context.Context, name string) (removeResult, error) {
	var res removeResult
	err := a.client.Call(ctx, http.MethodDelete, userPath(name), nil, &res)
	return res, adminError(err)
}

func (a *adminUsers) list(ctx context.Context) ([]userInfo, error) {
	var infos []userInfo
	err := a.client.Call(ctx, http.MethodGet, "/users", nil, &infos)
	return infos, adminError(err)
}

func (a *adminUsers) where() string {
	return "The running bridge serve applied the change; it takes effect at once."
}

func (a *adminUsers) close() error { return nil }

// adminError turns the server's 400 and 404 back into the errors that a
// local userManager returns, so commands handle both alike.
func adminError(err error) error {
	var ae *admin.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Status {
	case http.StatusBadRequest:
		return badRequest{ae.Message}
	case http.StatusNotFound:
		return notFoundError{ae.Message}
	}
	return err
}

// notFoundError is the server's 404, which wraps store.ErrNotFound.
type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }

func (e notFoundError) Unwrap() error { return store.ErrNotFound }

package main

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/bridgemail/bridge/admin"
	"github.com/bridgemail/bridge/store"
)

// userRoutes adds the user management routes of the admin socket. Each
// change takes effect at once, because the proxy reads the user from the
// store on every AUTH and at the start of every transaction. The token
// cache drops the cached tokens of an account whose refresh token changed
// or went.
func (d *daemon) userRoutes(mux *http.ServeMux) {
	m := &userManager{
		store:  d.store,
		tokens: d.tokens,
		providers: func(name string) bool {
			_, ok := d.providers()[name]
			return ok
		},
	}

	mux.HandleFunc("GET /users", func(w http.ResponseWriter, r *http.Request) {
		infos, err := m.list()
		if err != nil {
			d.userError(w, "listing users", "", err)
			return
		}
		admin.WriteJSON(w, http.StatusOK, infos)
	})

	mux.HandleFunc("PUT /users/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req authorizeRequest
		if err := admin.ReadJSON(r, &req); err != nil {
			d.userError(w, "authorizing user", name, badRequest{"invalid request body: " + err.Error()})
			return
		}
		res, err := m.authorize(name, req)
		if err != nil {
			d.userError(w, "authorizing user", name, err)
			return
		}
		d.log.Info("user authorized", "user", name, "account", req.Account, "provider", req.Provider,
			"created", res.Created, "password_set", res.PasswordSet, "token_replaced", res.TokenReplaced)
		if res.PreviousAccountRemoved {
			d.log.Info("account removed with its last user", "user", name, "account", res.PreviousAccount)
		}
		admin.WriteJSON(w, http.StatusOK, res)
	})

	mux.HandleFunc("PUT /users/{name}/password", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		var req passwordRequest
		if err := admin.ReadJSON(r, &req); err != nil {
			d.userError(w, "setting password", name, badRequest{"invalid request body: " + err.Error()})
			return
		}
		if err := m.setPassword(name, req); err != nil {
			d.userError(w, "setting password", name, err)
			return
		}
		d.log.Info("password changed", "user", name)
		admin.WriteJSON(w, http.StatusOK, struct{}{})
	})

	mux.HandleFunc("DELETE /users/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		res, err := m.remove(name)
		if err != nil {
			d.userError(w, "removing user", name, err)
			return
		}
		d.log.Info("user removed", "user", name, "account", res.Account, "account_removed", res.AccountRemoved)
		admin.WriteJSON(w, http.StatusOK, res)
	})
}

// userError logs err and returns it to the CLI: 400 for an invalid
// request, 404 for a user that does not exist, 500 for the rest.
func (d *daemon) userError(w http.ResponseWriter, action, user string, err error) {
	status := http.StatusInternalServerError
	var br badRequest
	switch {
	case errors.As(err, &br):
		status = http.StatusBadRequest
	case errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	}
	log := d.log.Warn
	if status == http.StatusInternalServerError {
		log = d.log.Error
	}
	log("admin request failed", "action", action, "user", user, "err", err)
	admin.WriteError(w, status, fmt.Errorf("%s: %w", action, err))
}

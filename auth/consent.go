package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/config"
)

// DefaultConsentTimeout is how long Consent waits for the redirect back
// from the consent screen.
const DefaultConsentTimeout = 10 * time.Minute

// Errors of Consent. Each means that no grant came back.
var (
	ErrAccessDenied    = errors.New("access was denied on the consent screen")
	ErrStateMismatch   = errors.New("the state in the redirect does not match this request")
	ErrNoRefreshToken  = errors.New("the token endpoint returned no refresh token")
	ErrMissingScope    = errors.New("the mail scope was not granted")
	ErrAccountMismatch = errors.New("consent was given for another account")
	ErrConsentTimeout  = errors.New("no redirect from the consent screen arrived in time")
)

// ConsentOptions configures Consent. The zero value waits for the
// loopback redirect only, on a free port, for DefaultConsentTimeout.
type ConsentOptions struct {
	// Account, if set, is sent as login_hint, and consent for any other
	// account is rejected with ErrAccountMismatch. It is compared without
	// regard to case.
	Account string
	// Port is the port of the loopback listener on 127.0.0.1. Zero picks
	// a free one.
	Port int
	// Timeout bounds the wait for the redirect. Zero means
	// DefaultConsentTimeout.
	Timeout time.Duration
	// Out receives the consent URL and the instructions. Nil discards
	// them.
	Out io.Writer
	// Paste, if not nil, is read line by line for the address that the
	// browser was redirected to, pasted by the admin when the browser
	// cannot reach the loopback listener. Consent does not wait for a Read
	// on it to return, so a Read still blocked when Consent returns
	// stays blocked until data arrives or Paste is closed.
	Paste io.Reader
	// HTTPClient makes the token and userinfo requests. Nil means a
	// client with a 30-second timeout.
	HTTPClient *http.Client
}

// Grant is the outcome of a successful consent.
type Grant struct {
	// Account is the consenting account's address, in lower case.
	Account      string
	RefreshToken string
	// Scopes are the scopes the account granted.
	Scopes []string
}

// Consent runs the authorization code grant (RFC 6749 section 4.1) with
// PKCE S256 (RFC 7636) and a loopback redirect URI (RFC 8252 section
// 7.3). It prints the consent URL to opts.Out and waits for the redirect
// on http://127.0.0.1:PORT/ or for its address pasted into opts.Paste,
// whichever arrives first. Then it checks the state and exchanges the
// authorization code.
//
// It returns a grant only if a refresh token came back, the granted
// scopes include the provider's mail scope, and the account matches
// opts.Account when that is set. A browser that lands on the loopback
// listener gets a page that tells whether it worked. Cancelling ctx
// stops the wait.
func (p *Provider) Consent(ctx context.Context, opts ConsentOptions) (*Grant, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultConsentTimeout
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)))
	if err != nil {
		return nil, fmt.Errorf("loopback listener for the redirect: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port

	conf := *p.OAuth
	conf.RedirectURL = fmt.Sprintf("http://127.0.0.1:%d/", port)
	// The state ties the redirect to this request against cross-site
	// request forgery (RFC 6749 section 10.12). rand.Text has 128 bits.
	state := rand.Text()
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL(state, p.authCodeOptions(verifier, opts.Account)...)

	out := &guardedWriter{w: opts.Out}
	defer out.close()
	printInstructions(out, authURL, port, timeout, opts.Paste != nil)

	w := newRedirectWaiter()
	defer close(w.done)
	srv := &http.Server{Handler: w, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer shutdownLoopback(srv)
	if opts.Paste != nil {
		go w.readPastes(opts.Paste, out)
	}

	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := w.wait(waitCtx)
	if err != nil {
		if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: waited %s", ErrConsentTimeout, timeout)
		}
		w.answerLate(err)
		return nil, err
	}

	grant, err := p.redeem(ctx, &conf, r.query, state, verifier, opts)
	r.answer(grant, err)
	return grant, err
}

// authCodeOptions returns the parameters of the authorization request
// besides client_id, redirect_uri, scope and state.
func (p *Provider) authCodeOptions(verifier, account string) []oauth2.AuthCodeOption {
	opts := []oauth2.AuthCodeOption{
		oauth2.S256ChallengeOption(verifier),
		// Google returns a refresh token again for an account that
		// consented before only with prompt=consent.
		oauth2.ApprovalForce,
	}
	if p.Kind != config.KindMicrosoft {
		// Google returns a refresh token only for access_type=offline;
		// Microsoft returns one for the offline_access scope instead.
		opts = append(opts, oauth2.AccessTypeOffline)
	}
	if account != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", account))
	}
	return opts
}

// redeem checks the redirect's query and exchanges its authorization code
// for a grant.
func (p *Provider) redeem(ctx context.Context, conf *oauth2.Config, q url.Values, state, verifier string, opts ConsentOptions) (*Grant, error) {
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return nil, fmt.Errorf("%w, so it may belong to another attempt or be forged; "+
			"run the command again and open the URL that this run prints", ErrStateMismatch)
	}
	if e := q.Get("error"); e != "" {
		if e == "access_denied" {
			return nil, fmt.Errorf("%w (access_denied); run the command again and allow access", ErrAccessDenied)
		}
		msg := "the authorization endpoint returned " + e
		if d := q.Get("error_description"); d != "" {
			msg += ": " + d
		}
		return nil, errors.New(msg)
	}
	code := q.Get("code")
	if code == "" {
		return nil, errors.New("the redirect carries neither an authorization code nor an error")
	}

	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, fmt.Errorf("exchanging the authorization code: %w", err)
	}
	return p.checkGrant(ctx, client, tok, conf.Scopes, opts.Account)
}

// checkGrant returns the grant of a token response if it has a refresh
// token, the mail scope and, when account is set, that account.
func (p *Provider) checkGrant(ctx context.Context, client *http.Client, tok *oauth2.Token, requested []string, expected string) (*Grant, error) {
	if tok.RefreshToken == "" {
		return nil, fmt.Errorf("%w; remove this app's access in the account's security settings "+
			"and run the command again", ErrNoRefreshToken)
	}

	scopes := grantedScopes(tok, requested)
	if !slices.Contains(scopes, p.MailScope()) {
		return nil, fmt.Errorf("%w: %s is missing from the granted scopes %q; "+
			"run the command again and leave the permission to send mail ticked on the consent screen",
			ErrMissingScope, p.MailScope(), strings.Join(scopes, " "))
	}

	account, err := p.accountAddress(ctx, client, tok)
	if err != nil {
		return nil, err
	}
	if expected != "" && !strings.EqualFold(account, expected) {
		return nil, fmt.Errorf("%w: %s consented, but %s was expected; sign in to the browser as %s",
			ErrAccountMismatch, account, expected, expected)
	}
	return &Grant{Account: account, RefreshToken: tok.RefreshToken, Scopes: scopes}, nil
}

// grantedScopes returns the scope of the token response. RFC 6749
// section 5.1 lets the server leave it out when it equals the requested
// scope.
func grantedScopes(tok *oauth2.Token, requested []string) []string {
	s, ok := tok.Extra("scope").(string)
	if !ok {
		return requested
	}
	return strings.Fields(s)
}

func printInstructions(w io.Writer, authURL string, port int, timeout time.Duration, paste bool) {
	fmt.Fprintf(w, "Open this URL in a browser, sign in as the account to send as, and allow access:\n\n")
	fmt.Fprintf(w, "%s\n\n", authURL)
	fmt.Fprintf(w, "The browser is then redirected to http://127.0.0.1:%d/, where this command listens.\n", port)
	fmt.Fprintf(w, "If the browser runs on another machine, forward that port from there before you open the URL:\n\n")
	fmt.Fprintf(w, "    ssh -L %d:127.0.0.1:%d user@server\n\n", port, port)
	if paste {
		fmt.Fprintf(w, "or, when the browser reports that it cannot reach 127.0.0.1, copy the whole address\n")
		fmt.Fprintf(w, "from its address bar and paste it here, followed by Enter.\n")
	}
	fmt.Fprintf(w, "Waiting up to %s...\n", timeout)
}

func shutdownLoopback(srv *http.Server) {
	// Shutdown lets the handler finish the page it is writing.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if srv.Shutdown(ctx) != nil {
		srv.Close()
	}
}

package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemail/bridge/config"
	"github.com/bridgemail/bridge/internal/fakeoauth"
)

// lineWriter sends every complete line written to it to a channel.
type lineWriter struct {
	mu    sync.Mutex
	buf   string
	lines chan string
}

func newLineWriter() *lineWriter { return &lineWriter{lines: make(chan string, 100)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf += string(p)
	for {
		line, rest, ok := strings.Cut(w.buf, "\n")
		if !ok {
			break
		}
		w.buf = rest
		w.lines <- line
	}
	return len(p), nil
}

// consentURL returns the first printed line that is a URL of the fake's
// authorization endpoint.
func (w *lineWriter) consentURL(t *testing.T, fake *fakeoauth.Server) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-w.lines:
			if strings.HasPrefix(line, fake.AuthURL()+"?") {
				return line
			}
		case <-timeout:
			t.Fatal("no consent URL was printed")
		}
	}
}

// waitLine waits for a printed line that contains substr.
func (w *lineWriter) waitLine(t *testing.T, substr string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line := <-w.lines:
			if strings.Contains(line, substr) {
				return line
			}
		case <-timeout:
			t.Fatalf("no line containing %q was printed", substr)
		}
	}
}

func testProvider(t *testing.T, fake *fakeoauth.Server) *Provider {
	t.Helper()
	kind := config.KindGoogle
	if slices.Contains(fake.Scopes(), "offline_access") {
		kind = config.KindMicrosoft
	}
	return &Provider{Name: kind, Kind: kind, OAuth: fake.Config(""), UserinfoURL: fake.UserinfoURL()}
}

type consentResult struct {
	grant *Grant
	err   error
}

// startConsent runs Consent in a goroutine.
func startConsent(t *testing.T, p *Provider, opts ConsentOptions) (*lineWriter, <-chan consentResult) {
	t.Helper()
	out := newLineWriter()
	opts.Out = out
	if opts.Timeout == 0 {
		opts.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan consentResult, 1)
	go func() {
		g, err := p.Consent(ctx, opts)
		done <- consentResult{g, err}
	}()
	return out, done
}

func result(t *testing.T, done <-chan consentResult) consentResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Consent did not return")
		return consentResult{}
	}
}

// follow opens u like a browser, following the redirect to the loopback
// listener, and returns the status and the page.
func follow(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET consent URL: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// redirectLocation opens u without following redirects and returns the
// address that the browser would be sent to.
func redirectLocation(t *testing.T, u string) string {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatalf("GET consent URL: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("consent URL returned %s, expected 302", resp.Status)
	}
	return resp.Header.Get("Location")
}

func TestConsentLoopbackRedirect(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{Account: "Scanner@Example.com"})

	u := out.consentURL(t, fake)
	status, page := follow(t, u)
	r := result(t, done)
	if r.err != nil {
		t.Fatalf("Consent: %v", r.err)
	}
	if r.grant.Account != "scanner@example.com" {
		t.Errorf("account = %q, expected scanner@example.com", r.grant.Account)
	}
	if r.grant.RefreshToken == "" {
		t.Error("grant has no refresh token")
	}
	if !slices.Contains(r.grant.Scopes, fakeoauth.GoogleMailScope) {
		t.Errorf("scopes = %v, expected the mail scope", r.grant.Scopes)
	}
	if status != http.StatusOK || !strings.Contains(page, "scanner@example.com") || !strings.Contains(page, "close this window") {
		t.Errorf("page = %d %q", status, page)
	}
	if got := fake.LoginHint(); got != "Scanner@Example.com" {
		t.Errorf("login_hint = %q", got)
	}
	q, _ := url.Parse(u)
	if got := q.Query().Get("redirect_uri"); !strings.HasPrefix(got, "http://127.0.0.1:") || !strings.HasSuffix(got, "/") {
		t.Errorf("redirect_uri = %q", got)
	}
	if form := fake.LastForm(); form.Get("code_verifier") == "" || form.Get("grant_type") != "authorization_code" {
		t.Errorf("token request form = %v", form)
	}
}

func TestConsentPastedAddress(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	paste, pasteW := io.Pipe()
	defer pasteW.Close()
	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{Paste: paste})

	loc := redirectLocation(t, out.consentURL(t, fake))
	io.WriteString(pasteW, "\nnot an address\n")
	out.waitLine(t, "That is not the address of the redirect")
	io.WriteString(pasteW, "  "+loc+"  \n")

	r := result(t, done)
	if r.err != nil {
		t.Fatalf("Consent: %v", r.err)
	}
	if r.grant.Account != fakeoauth.DefaultEmail {
		t.Errorf("account = %q", r.grant.Account)
	}
}

func TestRedirectWaiterFirstWins(t *testing.T) {
	w := newRedirectWaiter()
	defer close(w.done)
	if !w.submit(redirect{query: url.Values{"code": {"pasted"}}}) {
		t.Fatal("first submit lost")
	}

	rec := httptest.NewRecorder()
	w.ServeHTTP(rec, httptest.NewRequest("GET", "/?code=late&state=s", nil))
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "already handled") {
		t.Errorf("late redirect got %d %q", rec.Code, rec.Body.String())
	}
	r, err := w.wait(context.Background())
	if err != nil || r.query.Get("code") != "pasted" {
		t.Errorf("wait = %v %v, expected the pasted redirect", r.query, err)
	}
}

func TestRedirectWaiterIgnoresOtherRequests(t *testing.T) {
	w := newRedirectWaiter()
	defer close(w.done)
	for _, tt := range []struct {
		method, target string
		status         int
	}{
		{"GET", "/favicon.ico", http.StatusNotFound},
		{"POST", "/?code=x", http.StatusNotFound},
		{"GET", "/", http.StatusBadRequest},
		{"GET", "/?state=only", http.StatusBadRequest},
	} {
		rec := httptest.NewRecorder()
		w.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.target, nil))
		if rec.Code != tt.status {
			t.Errorf("%s %s: status %d, expected %d", tt.method, tt.target, rec.Code, tt.status)
		}
	}
	if w.claimed.Load() {
		t.Error("a request without code or error claimed the redirect")
	}
}

func TestConsentRejected(t *testing.T) {
	tests := []struct {
		name    string
		consent fakeoauth.Consent
		email   string
		account string
		want    error
		page    string
	}{
		{name: "state mismatch", consent: fakeoauth.Consent{TamperState: true}, want: ErrStateMismatch},
		{name: "denied", consent: fakeoauth.Consent{Deny: true}, want: ErrAccessDenied},
		{name: "denied with tampered state", consent: fakeoauth.Consent{Deny: true, TamperState: true}, want: ErrStateMismatch},
		{name: "mail scope unticked", consent: fakeoauth.Consent{UntickMail: true}, want: ErrMissingScope},
		{name: "other account", email: "other@example.com", account: "scanner@example.com", want: ErrAccountMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := fakeoauth.Start(t, fakeoauth.Options{Email: tt.email})
			fake.SetConsent(tt.consent)
			out, done := startConsent(t, testProvider(t, fake), ConsentOptions{Account: tt.account})

			status, page := follow(t, out.consentURL(t, fake))
			r := result(t, done)
			if !errors.Is(r.err, tt.want) {
				t.Fatalf("err = %v, expected %v", r.err, tt.want)
			}
			if r.grant != nil {
				t.Errorf("grant = %+v, expected none", r.grant)
			}
			if status != http.StatusBadRequest || !strings.Contains(page, "Nothing was stored") {
				t.Errorf("page = %d %q", status, page)
			}
		})
	}
}

func TestConsentStateMismatchRedeemsNoCode(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	fake.SetConsent(fakeoauth.Consent{TamperState: true})
	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	if r := result(t, done); !errors.Is(r.err, ErrStateMismatch) {
		t.Fatalf("err = %v", r.err)
	}
	if n := fake.TokenRequests(); n != 0 {
		t.Errorf("%d token requests after a state mismatch, expected 0", n)
	}
}

func TestConsentFailedExchange(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	fake.SetTokenFault(fakeoauth.ServerError)
	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	r := result(t, done)
	if r.err == nil || !strings.Contains(r.err.Error(), "exchanging the authorization code") {
		t.Fatalf("err = %v", r.err)
	}
}

func TestConsentWrongClientSecret(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	p := testProvider(t, fake)
	p.OAuth.ClientSecret = "wrong"
	out, done := startConsent(t, p, ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	r := result(t, done)
	if r.err == nil || !strings.Contains(r.err.Error(), "invalid_client") {
		t.Fatalf("err = %v", r.err)
	}
}

func TestConsentTimeout(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	_, done := startConsent(t, testProvider(t, fake), ConsentOptions{Timeout: 50 * time.Millisecond})
	r := result(t, done)
	if !errors.Is(r.err, ErrConsentTimeout) {
		t.Fatalf("err = %v, expected ErrConsentTimeout", r.err)
	}
}

func TestConsentCancelled(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out := newLineWriter()
	go func() {
		_, err := testProvider(t, fake).Consent(ctx, ConsentOptions{Out: out})
		done <- err
	}()
	out.consentURL(t, fake)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, expected context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Consent did not return after cancel")
	}
}

func TestConsentFixedPort(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	// A port that was free a moment ago; the race with other processes
	// is harmless in a test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	portStr := strconv.Itoa(port)

	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{Port: port})
	u := out.consentURL(t, fake)
	if !strings.Contains(u, url.QueryEscape("http://127.0.0.1:"+portStr+"/")) {
		t.Errorf("consent URL %s lacks redirect_uri on port %s", u, portStr)
	}
	follow(t, u)
	if r := result(t, done); r.err != nil {
		t.Fatal(r.err)
	}
}

func TestConsentPrintsSSHHint(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	out, done := startConsent(t, testProvider(t, fake), ConsentOptions{})
	u := out.consentURL(t, fake)
	q, _ := url.Parse(u)
	redirectURI, _ := url.Parse(q.Query().Get("redirect_uri"))
	port := redirectURI.Port()
	line := out.waitLine(t, "ssh -L")
	if want := "ssh -L " + port + ":127.0.0.1:" + port + " "; !strings.Contains(line, want) {
		t.Errorf("ssh line %q lacks %q", line, want)
	}
	follow(t, u)
	result(t, done)
}

// tokenEndpoint serves token responses with the given body to every
// code exchange.
func tokenEndpoint(t *testing.T, body map[string]any) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestConsentNoRefreshToken(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	tokens := tokenEndpoint(t, map[string]any{
		"access_token": "ya29.x", "token_type": "Bearer", "expires_in": 3599,
		"scope": fakeoauth.GoogleMailScope + " openid email",
	})
	p := testProvider(t, fake)
	p.OAuth.Endpoint.TokenURL = tokens.URL
	out, done := startConsent(t, p, ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	if r := result(t, done); !errors.Is(r.err, ErrNoRefreshToken) {
		t.Fatalf("err = %v, expected ErrNoRefreshToken", r.err)
	}
}

func TestConsentAccountFromUserinfo(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	tokens := tokenEndpoint(t, map[string]any{
		"access_token":  fake.IssueAccessToken("Info@Example.com"),
		"refresh_token": "1//refresh",
		"token_type":    "Bearer", "expires_in": 3599,
		"scope": fakeoauth.GoogleMailScope + " openid email",
	})
	p := testProvider(t, fake)
	p.OAuth.Endpoint.TokenURL = tokens.URL
	out, done := startConsent(t, p, ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	r := result(t, done)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.grant.Account != "info@example.com" {
		t.Errorf("account = %q", r.grant.Account)
	}
}

func TestConsentScopeOmittedMeansRequested(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{})
	tokens := tokenEndpoint(t, map[string]any{
		"access_token":  fake.IssueAccessToken("a@example.com"),
		"refresh_token": "1//refresh",
		"token_type":    "Bearer", "expires_in": 3599,
	})
	p := testProvider(t, fake)
	p.OAuth.Endpoint.TokenURL = tokens.URL
	out, done := startConsent(t, p, ConsentOptions{})
	follow(t, out.consentURL(t, fake))
	r := result(t, done)
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !slices.Equal(r.grant.Scopes, fake.Scopes()) {
		t.Errorf("scopes = %v, expected the requested %v", r.grant.Scopes, fake.Scopes())
	}
}

func TestIDTokenEmail(t *testing.T) {
	p := &Provider{OAuth: fakeoauth.Start(t, fakeoauth.Options{}).Config("")}
	enc := func(claims string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + b64(claims) + ".c2ln"
	}
	tests := []struct {
		name, token, want string
		wantErr           bool
	}{
		{name: "audience string", token: enc(`{"email":"a@x","aud":"` + fakeoauth.DefaultClientID + `"}`), want: "a@x"},
		{name: "audience array", token: enc(`{"email":"a@x","aud":["other","` + fakeoauth.DefaultClientID + `"]}`), want: "a@x"},
		{name: "no audience", token: enc(`{"email":"a@x"}`), want: "a@x"},
		{name: "no email", token: enc(`{"aud":"` + fakeoauth.DefaultClientID + `"}`), want: ""},
		{name: "other audience", token: enc(`{"email":"a@x","aud":"evil"}`), wantErr: true},
		{name: "two parts", token: "a.b", wantErr: true},
		{name: "bad base64", token: "a.!!!.c", wantErr: true},
		{name: "bad JSON", token: enc(`{`), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.idTokenEmail(tt.token)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("email = %q, expected %q", got, tt.want)
			}
		})
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestConsentMicrosoftFlavor(t *testing.T) {
	fake := fakeoauth.Start(t, fakeoauth.Options{Flavor: fakeoauth.Microsoft})
	p := testProvider(t, fake)
	if p.MailScope() != fakeoauth.MicrosoftMailScope {
		t.Fatalf("test provider has mail scope %q", p.MailScope())
	}
	out, done := startConsent(t, p, ConsentOptions{Account: "user@contoso.example"})
	follow(t, out.consentURL(t, fake))
	r := result(t, done)
	if r.err != nil {
		t.Fatalf("Consent: %v", r.err)
	}
	if r.grant.Account != "user@contoso.example" || r.grant.RefreshToken == "" {
		t.Errorf("grant = %+v", r.grant)
	}
	if form := fake.LastForm(); form.Has("client_secret") {
		t.Error("a public client sent a client_secret")
	}
}

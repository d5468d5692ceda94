package auth

import (
	"bufio"
	"context"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
)

// redirect is the query of the redirect back from the consent screen,
// received by the loopback listener or pasted.
type redirect struct {
	query url.Values
	// outcome takes the result for the browser's page; it is nil for a
	// pasted address.
	outcome chan<- consentOutcome
}

type consentOutcome struct {
	grant *Grant
	err   error
}

func (r redirect) answer(g *Grant, err error) {
	if r.outcome != nil {
		r.outcome <- consentOutcome{grant: g, err: err}
	}
}

// redirectWaiter accepts the first redirect from either source. It is
// the loopback listener's handler.
type redirectWaiter struct {
	claimed   atomic.Bool
	redirects chan redirect
	// done is closed when Consent returns.
	done chan struct{}
}

func newRedirectWaiter() *redirectWaiter {
	// Only the first submit sends, so a buffer of one never blocks.
	return &redirectWaiter{redirects: make(chan redirect, 1), done: make(chan struct{})}
}

// submit hands r to the waiting Consent and reports whether it came first.
func (w *redirectWaiter) submit(r redirect) bool {
	if !w.claimed.CompareAndSwap(false, true) {
		return false
	}
	w.redirects <- r
	return true
}

func (w *redirectWaiter) wait(ctx context.Context) (redirect, error) {
	select {
	case r := <-w.redirects:
		return r, nil
	case <-ctx.Done():
		return redirect{}, ctx.Err()
	}
}

// answerLate gives err to a redirect that arrived while the wait ended,
// so its browser does not wait for a page.
func (w *redirectWaiter) answerLate(err error) {
	select {
	case r := <-w.redirects:
		r.answer(nil, err)
	default:
	}
}

// isRedirect reports whether q is the query of a redirect from the
// authorization endpoint (RFC 6749 sections 4.1.2 and 4.1.2.1).
func isRedirect(q url.Values) bool { return q.Has("code") || q.Has("error") }

func (w *redirectWaiter) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/" {
		http.NotFound(rw, r)
		return
	}
	q := r.URL.Query()
	if !isRedirect(q) {
		writePage(rw, http.StatusBadRequest, "Waiting for the consent screen",
			"This address belongs to bridge authorize. It waits for the redirect from the consent screen.")
		return
	}

	outcome := make(chan consentOutcome, 1)
	if !w.submit(redirect{query: q, outcome: outcome}) {
		writePage(rw, http.StatusConflict, "Already handled",
			"This consent was already handled. Return to the terminal; you can close this window.")
		return
	}
	select {
	case o := <-outcome:
		if o.err != nil {
			writePage(rw, http.StatusBadRequest, "Authorization failed",
				"Authorization failed: "+o.err.Error()+". Nothing was stored. "+
					"Return to the terminal; you can close this window.")
			return
		}
		writePage(rw, http.StatusOK, "Access granted",
			"Consent for "+o.grant.Account+" was received. Return to the terminal; you can close this window.")
	case <-r.Context().Done():
	case <-w.done:
	}
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bridge: {{.Title}}</title></head>
<body><h1>{{.Title}}</h1><p>{{.Message}}</p></body></html>
`))

func writePage(w http.ResponseWriter, status int, title, message string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	pageTemplate.Execute(w, struct{ Title, Message string }{title, message})
}

// readPastes reads lines from r until one is the address of a redirect,
// and submits its query.
func (w *redirectWaiter) readPastes(r io.Reader, out io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		u, err := url.Parse(line)
		if err != nil || !isRedirect(u.Query()) {
			fmt.Fprintln(out, "That is not the address of the redirect: it has no code or error parameter. "+
				"Paste the whole address from the browser's address bar.")
			continue
		}
		w.submit(redirect{query: u.Query()})
		return
	}
}

// guardedWriter serializes writes and drops those after close, so the
// paste reader cannot write once Consent has returned.
type guardedWriter struct {
	mu     sync.Mutex
	w      io.Writer
	closed bool
}

func (g *guardedWriter) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.w == nil {
		return len(p), nil
	}
	return g.w.Write(p)
}

func (g *guardedWriter) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

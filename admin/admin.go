// Package admin is the local control channel between the bridge CLI and a
// running bridge serve: JSON over HTTP on a unix socket with mode 0600.
//
// bbolt lets only one process open the database, so while serve runs it
// owns the store and the CLI sends its changes here. When no server runs,
// the CLI opens the store itself.
package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"
)

// ErrNotRunning is returned by Dial when no server listens on the socket.
var ErrNotRunning = errors.New("no bridge serve is running")

// Server serves the admin API on a unix socket.
type Server struct {
	path string
	ln   net.Listener
	http *http.Server
}

// Listen opens the socket at path with mode 0600 and serves handler on
// it. A socket file left by a server that is gone is replaced; one that a
// live server listens on is an error.
func Listen(path string, handler http.Handler, log *slog.Logger) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("admin socket %s: another bridge serve is listening on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing stale admin socket: %w", err)
	}

	// The umask makes the socket 0600 from its creation, with no window
	// in which others could connect.
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}

	s := &Server{
		path: path,
		ln:   ln,
		http: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}
	go s.http.Serve(ln)
	return s, nil
}

// Close stops the server and removes the socket file.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

// Client calls the admin API of a running server.
type Client struct {
	http *http.Client
}

// Dial returns a client for the server on the socket at path, or an error
// wrapping ErrNotRunning when nothing listens there.
func Dial(path string) (*Client, error) {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return nil, fmt.Errorf("%w (admin socket %s: %v)", ErrNotRunning, path, err)
	}
	c.Close()

	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{http: &http.Client{Transport: transport, Timeout: 2 * time.Minute}}, nil
}

// Error is an error the server returned, with its HTTP status.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// Call sends in as JSON to the path with method and decodes the reply
// into out; in and out may be nil.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bridge"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.NewDecoder(resp.Body).Decode(e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("admin %s %s: %s", method, path, resp.Status)
		}
		return e
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// WriteJSON writes v as the JSON body of a reply with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// WriteError writes err as an Error body with status.
func WriteError(w http.ResponseWriter, status int, err error) {
	WriteJSON(w, status, &Error{Message: err.Error()})
}

// ReadJSON decodes the request body into v, rejecting unknown fields.
func ReadJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
	"github.com/bridgemail/bridge/store"
)

// session is one client connection. go-smtp calls its methods from the
// connection's goroutine, one at a time, with one exception: during BDAT,
// Data runs in a goroutine of its own, and RSET or a closed connection may
// call Reset or Logout while it still runs. dataMu orders those calls.
type session struct {
	srv    *Server
	conn   *smtp.Conn
	id     string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	start  time.Time
	// cc is the tracked connection, for a graceful stop; nil only for a
	// connection that did not come through a listener.
	cc *clientConn

	// mechanism is the SASL mechanism of the latest AUTH command.
	mechanism string

	// Set by a successful AUTH.
	user         *store.User
	userName     string
	providerName string

	// dataMu is held by Data for its whole run and by Reset.
	dataMu sync.Mutex

	// The current transaction.
	up      *upstream
	inTx    bool
	from    string
	rcpts   int
	txStart time.Time
}

var _ smtp.AuthSession = (*session)(nil)

// AuthMechanisms returns the mechanisms offered in EHLO.
func (s *session) AuthMechanisms() []string {
	return []string{sasl.Plain, auth.Login}
}

// Auth returns the SASL server for mech.
func (s *session) Auth(mech string) (sasl.Server, error) {
	s.mechanism = mech
	switch mech {
	case sasl.Plain:
		return &saslReplies{s: s, Server: sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				// Sending on behalf of another user is not offered.
				return s.authFailed(username, "authorization identity differs from username")
			}
			return s.authenticate(username, password)
		})}, nil
	case auth.Login:
		return &saslReplies{s: s, Server: auth.NewLoginServer(s.authenticate)}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// saslReplies turns the errors of a SASL server that are not SMTP replies,
// such as go-sasl's for a PLAIN response without two NUL bytes, into 501.
// go-smtp would send them as 454, a temporary failure that a client may
// retry forever.
type saslReplies struct {
	sasl.Server
	s *session
}

func (r *saslReplies) Next(response []byte) ([]byte, bool, error) {
	challenge, done, err := r.Server.Next(response)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		r.s.log.Info("AUTH failed: malformed SASL response", "err", err)
		return nil, true, r.s.reply(&smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2},
			Message: "Malformed authentication response"})
	}
	return challenge, done, err
}

// authenticate checks the local credentials against the store.
func (s *session) authenticate(username, password string) error {
	if s.user != nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Already authenticated"}
	}
	wait := s.srv.throttle.begin(s.remoteIP(), username, password)
	if wait >= 0 {
		defer s.srv.throttle.end(s.remoteIP(), username, password)
	}
	if wait < 0 {
		// The start of the lockout was logged once; each attempt
		// during it is not, so a scan cannot flood the log.
		s.log.Debug("AUTH rejected: locked out after repeated failures", "user", username)
		return s.reply(&smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "Too many failed logins, try again later"})
	} else if wait > 0 {
		select {
		case <-time.After(wait):
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}

	u, err := s.srv.users.User(username)
	hash := u.PasswordHash
	if err != nil {
		hash = ""
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Error("reading user", "user", username, "err", err)
		}
	}
	// Check runs argon2id for unknown users too, so they take as long as
	// a wrong password.
	if !s.srv.passwords.Check(hash, password) {
		if err != nil {
			return s.authFailed(username, "no such user")
		}
		return s.authFailed(username, "wrong password")
	}

	s.srv.throttle.success(s.remoteIP(), username)
	s.setUser(u)
	s.log.Info("authenticated", "mechanism", s.mechanism)
	return nil
}

// setUser makes the session send as u, after AUTH or for a trusted client.
func (s *session) setUser(u store.User) {
	s.user = &u
	s.userName = u.Name
	s.providerName = u.Provider
	s.log = s.log.With("user", u.Name, "account", u.Account)
	s.srv.touchUser(u.Name, time.Now())
}

// touchInterval is how often the last use of a user is written to the
// store: each write is a transaction with an fsync, and a minute is as
// exact as bridge users list shows it.
const touchInterval = time.Minute

// touchUser records in the background that the user logged in at now,
// unless it was recorded less than touchInterval ago.
func (s *Server) touchUser(name string, now time.Time) {
	if last, ok := s.touched.Load(name); ok && now.Sub(last.(time.Time)) < touchInterval {
		return
	}
	s.touched.Store(name, now)
	s.background.Go(func() {
		if err := s.users.TouchUser(name, now); err != nil {
			s.log.Warn("recording last use", "user", name, "err", err)
		}
	})
}

// trustedLogin makes a session without AUTH send as the user that
// trusted_clients maps its client address to. Any other session gets 530.
func (s *session) trustedLogin() error {
	addr, err := netip.ParseAddr(s.remoteIP())
	if err != nil {
		return s.reply(errAuthRequired)
	}
	name, ok := s.srv.cfg().TrustedUser(addr)
	if !ok {
		return s.reply(errAuthRequired)
	}

	u, err := s.srv.users.User(name)
	if err != nil {
		s.log.Error("trusted client maps to a user that cannot be read; run: bridge authorize "+name,
			"client", addr.String(), "user", name, "err", err)
		return s.reply(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message: "The user for this trusted client is not available, try again later"})
	}
	s.setUser(u)
	s.log.Info("trusted client sends without AUTH", "client", addr.String())
	return nil
}

func (s *session) authFailed(username, reason string) error {
	locked := s.srv.throttle.failure(s.remoteIP(), username)
	s.log.Warn("AUTH failed", "user", username, "mechanism", s.mechanism, "reason", reason)
	if locked {
		s.log.Warn("locking out AUTH after repeated failures", "user", username,
			"client", s.remoteIP(), "for", s.srv.cfg().Throttle.Lockout)
	}
	return s.reply(errAuthFailed)
}

// reloadUser rereads the session's user at the start of each
// transaction, because bridge authorize or bridge users may have changed
// it since AUTH. A
// user that was removed, or whose password, account or provider changed,
// must authenticate again. A changed list of allowed senders applies at
// once.
func (s *session) reloadUser() error {
	u, err := s.srv.users.User(s.userName)
	if errors.Is(err, store.ErrNotFound) {
		s.log.Warn("MAIL rejected: the user was removed after it authenticated")
		s.user = nil
		return s.reply(errAuthRequired)
	}
	if err != nil {
		return s.toReply("mail", fmt.Errorf("reading user %s: %w", s.userName, err))
	}
	if u.PasswordHash != s.user.PasswordHash || u.Account != s.user.Account || u.Provider != s.user.Provider {
		s.log.Warn("MAIL rejected: the user's password, account or provider changed after it authenticated")
		s.user = nil
		return s.reply(errAuthRequired)
	}
	s.user = &u
	return nil
}

// reply appends the session id to a local reply.
func (s *session) reply(e *smtp.SMTPError) *smtp.SMTPError {
	out := *e
	out.Message += " [" + s.id + "]"
	return &out
}

// Mail starts a transaction: it gets an access token, connects and
// authenticates upstream (or takes a pooled connection), and sends MAIL.
// A stopping server starts no transaction.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.user == nil {
		if err := s.trustedLogin(); err != nil {
			return err
		}
	}
	if s.up != nil {
		// go-smtp passes a second MAIL on; RFC 5321 section 4.1.1.2
		// wants RSET first, and taking a second upstream connection
		// would leak the first.
		return s.reply(&smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1},
			Message: "Nested MAIL command: send RSET first"})
	}
	if !s.cc.beginTx() {
		s.log.Info("MAIL rejected: the server is stopping")
		return s.reply(errShuttingDown)
	}
	if err := s.mail(from, opts); err != nil {
		s.cc.endTx()
		return err
	}
	s.cc.setUpstream(s.up.conn)
	return nil
}

func (s *session) mail(from string, opts *smtp.MailOptions) error {
	if err := s.reloadUser(); err != nil {
		return err
	}
	if len(s.user.AllowedSenders) > 0 && !slices.ContainsFunc(s.user.AllowedSenders, func(a string) bool {
		return strings.EqualFold(a, from)
	}) {
		s.log.Warn("envelope sender not allowed", "from", from)
		return s.reply(&smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Sender <%s> is not allowed for this login", from)})
	}

	p, ok := s.srv.provider(s.providerName)
	if !ok {
		return s.toReply("mail", fmt.Errorf("user %s names provider %q, which is not configured", s.userName, s.providerName))
	}

	upOpts := &smtp.MailOptions{Size: opts.Size, Body: opts.Body, UTF8: opts.UTF8}
	s.txStart = time.Now()
	for attempt := 0; ; attempt++ {
		up, err := s.srv.pool.get(withLogger(s.ctx, s.log), p, s.user.Account, attempt > 0)
		if err != nil {
			return s.toReply("connect", err)
		}
		err = up.client.Mail(from, upOpts)
		if err == nil {
			s.up, s.inTx, s.from, s.rcpts = up, true, from, 0
			return nil
		}
		if !upstreamGone(err) {
			s.srv.pool.release(up)
			return s.toReply("mail", err)
		}
		s.srv.pool.discard(up)
		if !up.reused || attempt > 0 {
			return s.toReply("mail", err)
		}
		// The server closed the pooled connection, or replied 421 on
		// it, so the session retries once on a new connection and the
		// client never sees the failure.
		s.log.Info("pooled upstream connection failed; retrying on a new one", "err", err)
	}
}

// Rcpt sends one recipient upstream and returns the server's verdict for
// it.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.user == nil {
		return s.reply(errAuthRequired)
	}
	if s.up == nil {
		return s.toReply("rcpt", io.ErrUnexpectedEOF)
	}
	if max := s.srv.cfg().Limits.MaxRecipients; s.rcpts >= max {
		return s.reply(&smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3},
			Message: fmt.Sprintf("Too many recipients: at most %d per message", max)})
	}
	if err := s.up.client.Rcpt(to, nil); err != nil {
		if upstreamGone(err) {
			s.dropUpstream()
		}
		return s.toReply("rcpt", err)
	}
	s.rcpts++
	return nil
}

// Data streams the message upstream as it arrives and returns the
// upstream's reply to the end of data. The client never gets 250 unless
// the upstream replied 250.
func (s *session) Data(r io.Reader) error {
	if s.user == nil {
		return s.reply(errAuthRequired)
	}
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	if s.up == nil {
		return s.toReply("data", io.ErrUnexpectedEOF)
	}
	up := s.up

	limits := s.srv.cfg().Limits
	w, err := up.data(limits.UpstreamTimeout)
	if err != nil {
		if upstreamGone(err) {
			s.dropUpstream()
		}
		return s.toReply("data", err)
	}

	meta := &messageMeta{}
	lw := &crlfWriter{w: w}
	size, readErr, writeErr := s.copyData(lw, r, meta)
	if readErr != nil || writeErr != nil {
		// The final dot must not reach the upstream for a message that
		// did not arrive whole, so the connection is dropped instead.
		s.dropUpstream()
		if readErr != nil {
			return s.dataReadFailed(size, readErr)
		}
		return s.toReply("data", writeErr)
	}

	text, err := w.close(limits.UpstreamTimeout, limits.UpstreamDataTimeout)
	duration := time.Since(s.txStart).Round(time.Millisecond)
	if err != nil {
		if upstreamGone(err) {
			s.dropUpstream()
		} else {
			// The reply to the end of data ends the transaction, so
			// the connection needs no RSET.
			s.inTx = false
		}
		s.log.Warn("message not relayed", "message_id", meta.messageID(), "size", size,
			"recipients", s.rcpts, "reply", replyText(err), "duration", duration)
		return s.toReply("data end", err)
	}

	s.inTx = false
	up.used++
	s.srv.activity.sent(s.user.Account)
	if lw.repaired > 0 {
		s.log.Info("bare CR or LF line endings relayed as CRLF", "message_id", meta.messageID(),
			"repaired", lw.repaired)
	}
	reply := parseReply(250, text)
	s.log.Info("message relayed", "message_id", meta.messageID(), "size", size,
		"recipients", s.rcpts, "reply", fmt.Sprintf("%d %d.%d.%d %s", reply.Code,
			reply.EnhancedCode[0], reply.EnhancedCode[1], reply.EnhancedCode[2], oneLine(reply.Message)),
		"duration", duration)
	return s.reply(reply)
}

// copyBuffers holds the buffers of copyData, so that a message does not
// allocate 32 KiB.
var copyBuffers = sync.Pool{New: func() any {
	b := make([]byte, 32*1024)
	return &b
}}

// dataReadFailed logs and returns the reply for a message whose data did
// not arrive whole from the client. Data that never ends is worth a
// warning: it is what a sender gets that ends its data with LF "." LF
// instead of CRLF "." CRLF.
func (s *session) dataReadFailed(size int64, err error) error {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		s.log.Info("message not relayed: client data failed", "size", size, "err", err)
		return s.reply(se)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		timeout := s.srv.cfg().Limits.ReadTimeout
		s.log.Warn("message not relayed: no end of data within read_timeout; "+
			"the client must end its data with CRLF . CRLF", "size", size, "read_timeout", timeout)
		return s.reply(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
			Message: fmt.Sprintf("Message not relayed: no end of data (CRLF . CRLF) within %v", timeout)})
	}
	if errors.Is(err, smtp.ErrTooLongLine) {
		// Retrying would fail the same way, so the reply is permanent.
		limit := s.conn.Server().MaxLineLength
		s.log.Warn("message not relayed: a line is longer than the limit", "size", size, "max_line_length", limit)
		return s.reply(&smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0},
			Message: fmt.Sprintf("Message not relayed: a line is longer than %d octets; RFC 5321 allows 1000", limit)})
	}
	s.log.Info("message not relayed: client data failed", "size", size, "err", err)
	return s.reply(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
		Message: "Message not relayed: reading it from the client failed"})
}

// copyData copies the message from the client to the upstream, with a
// write deadline on each chunk, and collects the headers the log needs.
func (s *session) copyData(w io.Writer, r io.Reader, meta *messageMeta) (size int64, readErr, writeErr error) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	timeout := s.srv.cfg().Limits.UpstreamTimeout
	for {
		n, err := r.Read(buf)
		if n > 0 {
			meta.write(buf[:n])
			s.up.conn.SetWriteDeadline(time.Now().Add(timeout))
			if _, werr := w.Write(buf[:n]); werr != nil {
				return size, nil, werr
			}
			size += int64(n)
		}
		if errors.Is(err, io.EOF) {
			// The data writer's close sets the deadlines of the final
			// dot and of the reply.
			return size, nil, nil
		}
		if err != nil {
			return size, err, nil
		}
	}
}

// dropUpstream closes the upstream connection of the transaction without
// finishing it.
func (s *session) dropUpstream() {
	if s.up != nil {
		s.srv.pool.discard(s.up)
		s.up = nil
	}
	s.inTx = false
}

// Reset ends the transaction. go-smtp calls it after every DATA, on RSET
// and on a new EHLO. The connection goes back to the pool. A connection
// whose transaction did not end with a reply to the end of data gets RSET
// first, and is closed if that fails. On a stopping server, the client
// connection closes after the current reply.
func (s *session) Reset() {
	// go-smtp closes the BDAT pipe before it calls Reset, so a Data
	// still running returns soon.
	s.dataMu.Lock()
	defer s.dataMu.Unlock()
	defer s.cc.endTx()
	if s.up == nil {
		return
	}
	if s.inTx {
		if err := s.up.reset(s.srv.cfg().Limits.UpstreamTimeout); err != nil {
			s.log.Debug("upstream RSET failed; closing the connection", "err", err)
			s.srv.pool.discard(s.up)
			s.up = nil
		}
	}
	if s.up != nil {
		s.srv.pool.release(s.up)
	}
	s.up, s.inTx, s.from, s.rcpts = nil, false, "", 0
}

// Logout ends the session when the client quits or the connection closes.
func (s *session) Logout() error {
	s.Reset()
	s.cancel()
	s.cc.detach()
	s.srv.sessionDone()
	s.log.Debug("session closed", "duration", time.Since(s.start).Round(time.Millisecond))
	return nil
}

func (s *session) remoteIP() string {
	addr := s.conn.Conn().RemoteAddr().String()
	if host, _, err := splitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// parseReply splits the enhanced status code off a reply text.
func parseReply(code int, text string) *smtp.SMTPError {
	reply := &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: text}
	var a, b, c int
	if n, _ := fmt.Sscanf(text, "%d.%d.%d", &a, &b, &c); n == 3 && a == code/100 {
		reply.EnhancedCode = smtp.EnhancedCode{a, b, c}
		_, reply.Message, _ = strings.Cut(text, " ")
	}
	return reply
}

func replyText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1],
			se.EnhancedCode[2], oneLine(se.Message))
	}
	return err.Error()
}

package fakegmail

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// errDropped is returned to go-smtp after a fault closed the connection.
// The client never sees it.
var errDropped = errors.New("connection dropped by fault")

// session is one go-smtp session. A new one starts at the first EHLO.
type session struct {
	srv  *Server
	conn *conn
	user string

	from     string
	mailOpts smtp.MailOptions
	to       []string
}

func (s *Server) newSession(sc *smtp.Conn) (smtp.Session, error) {
	c, ok := sc.Conn().(*conn)
	if !ok {
		return nil, fmt.Errorf("unexpected connection type %T", sc.Conn())
	}
	return &session{srv: s, conn: c}, nil
}

// secure reports whether the connection may carry AUTH and mail.
func (s *session) secure() bool {
	return s.srv.opts.TLS == ImplicitTLS || s.conn.isTLS()
}

func (s *session) AuthMechanisms() []string {
	if !s.secure() {
		return nil
	}
	if s.srv.opts.Flavor == Microsoft {
		return []string{sasl.Login, "XOAUTH2"}
	}
	return []string{sasl.Login, sasl.Plain, "XOAUTH2"}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if !s.secure() {
		s.srv.countAuth(true)
		return nil, mustStartTLS
	}
	if err := s.applyFault(StageAuth); err != nil {
		s.srv.countAuth(true)
		return nil, err
	}

	switch mech {
	case "XOAUTH2":
		s.srv.countAuth(false)
		return &xoauth2Server{sess: s}, nil
	case sasl.Login, sasl.Plain:
		s.srv.countAuth(true)
		if s.srv.opts.Flavor == Microsoft {
			return nil, BasicAuthDisabled
		}
		return nil, BadCredentials
	}
	s.srv.countAuth(true)
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if !s.secure() {
		return mustStartTLS
	}
	if s.user == "" {
		return s.srv.authRequired()
	}
	if err := s.applyFault(StageMail); err != nil {
		return err
	}

	s.from = from
	s.mailOpts = smtp.MailOptions{}
	if opts != nil {
		s.mailOpts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.applyFault(StageRcpt); err != nil {
		return err
	}
	s.srv.mu.Lock()
	reject := s.srv.rejectRcpt
	s.srv.mu.Unlock()
	if reject != nil {
		if err := reject(to); err != nil {
			return err
		}
	}

	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	var buf bytes.Buffer
	var w io.Writer = &buf
	if s.srv.opts.DiscardData {
		w = io.Discard
	}
	if f, ok := s.srv.takeFault(StageDataBody); ok {
		if _, err := io.CopyN(w, r, f.AfterBytes); err != nil {
			return s.readError(err)
		}
		if err := s.fire(f); err != nil {
			return err
		}
	}
	if _, err := io.Copy(w, r); err != nil {
		return s.readError(err)
	}
	if err := s.applyFault(StageDataEnd); err != nil {
		return err
	}

	s.srv.addMessage(Message{
		ConnID:      s.conn.id,
		User:        s.user,
		From:        s.from,
		To:          append([]string(nil), s.to...),
		Data:        buf.Bytes(),
		MailOptions: s.mailOpts,
	})
	return nil
}

func (s *session) readError(err error) error {
	if errors.Is(err, smtp.ErrDataTooLarge) && s.srv.opts.Flavor == Gmail {
		return TooBig
	}
	return err
}

func (s *session) Reset() {
	s.from = ""
	s.mailOpts = smtp.MailOptions{}
	s.to = nil
}

func (s *session) Logout() error { return nil }

// applyFault fires the next armed fault of stage, if any.
func (s *session) applyFault(stage Stage) error {
	f, ok := s.srv.takeFault(stage)
	if !ok {
		return nil
	}
	return s.fire(f)
}

// fire waits for the fault's delay and then drops the connection or
// returns the fault's reply. It returns nil for a delay-only fault.
func (s *session) fire(f Fault) error {
	if !s.srv.sleep(f.Delay) {
		return net.ErrClosed
	}
	switch {
	case f.Drop:
		s.conn.drop()
		return errDropped
	case f.Reply != nil:
		return f.Reply
	}
	return nil
}

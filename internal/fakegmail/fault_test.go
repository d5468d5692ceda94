package fakegmail

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sendOne authenticates and sends one message on a new connection.
func sendOne(t *testing.T, s *Server) error {
	t.Helper()
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "a@example.com", token: "token-for-a@example.com"}); err != nil {
		return err
	}
	return c.SendMail("a@example.com", []string{"b@example.com"},
		strings.NewReader("Subject: x\r\n\r\n"+strings.Repeat("line\r\n", 100)))
}

func TestFaultReplies(t *testing.T) {
	tests := []struct {
		name  string
		fault Fault
		want  *smtp.SMTPError
	}{
		{"auth throttled", Fault{Stage: StageAuth, Reply: TooManyLoginAttempts}, TooManyLoginAttempts},
		{"mail daily limit", Fault{Stage: StageMail, Reply: DailyLimit}, DailyLimit},
		{"rcpt try again", Fault{Stage: StageRcpt, Reply: TryAgainLater}, TryAgainLater},
		{"data command", Fault{Stage: StageData, Reply: TryAgainLater}, TryAgainLater},
		{"data body", Fault{Stage: StageDataBody, AfterBytes: 50, Reply: TooBig}, TooBig},
		{"data end", Fault{Stage: StageDataEnd, Reply: DailyLimit}, DailyLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Start(t, Options{CheckToken: tokenFor})
			s.AddFault(tt.fault)

			err := sendOne(t, s)
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("error = %v, want *smtp.SMTPError", err)
			}
			if se.Code != tt.want.Code || se.EnhancedCode != tt.want.EnhancedCode {
				t.Errorf("reply = %d %v, want %d %v", se.Code, se.EnhancedCode, tt.want.Code, tt.want.EnhancedCode)
			}
			firstLine, _, _ := strings.Cut(tt.want.Message, "\n")
			if !strings.HasPrefix(se.Message, firstLine) {
				t.Errorf("message = %q, want prefix %q", se.Message, firstLine)
			}
			if n := len(s.Messages()); n != 0 {
				t.Errorf("%d messages recorded, want 0", n)
			}

			// The fault fired once, so the next attempt goes through.
			if err := sendOne(t, s); err != nil {
				t.Errorf("second attempt: %v", err)
			}
		})
	}
}

func TestFaultDrops(t *testing.T) {
	for _, stage := range []Stage{StageGreeting, StageAuth, StageMail, StageRcpt, StageData, StageDataBody, StageDataEnd} {
		s := Start(t, Options{CheckToken: tokenFor})
		s.AddFault(Fault{Stage: stage, Drop: true, AfterBytes: 10})

		err := func() (err error) {
			c, err := smtp.DialStartTLS(s.Addr(), s.ClientTLS("localhost"))
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Auth(&xoauth2Client{user: "a@example.com", token: "token-for-a@example.com"}); err != nil {
				return err
			}
			return c.SendMail("a@example.com", []string{"b@example.com"},
				strings.NewReader("Subject: x\r\n\r\n"+strings.Repeat("line\r\n", 100)))
		}()
		if err == nil {
			t.Errorf("stage %d: drop went unnoticed", stage)
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.Errorf("stage %d: got reply %v, want a closed connection", stage, se)
		}
		if n := len(s.Messages()); n != 0 {
			t.Errorf("stage %d: %d messages recorded, want 0", stage, n)
		}
	}
}

func TestGreeting421ClosesConnection(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	s.AddFault(Fault{Stage: StageGreeting, Reply: TryAgainLater})

	r := dialRaw(t, s)
	got := r.reply()
	if !strings.HasPrefix(got[0], "421 4.7.0 Try again later, closing connection. ") {
		t.Errorf("greeting = %q", got)
	}
	r.expectClosed()
}

func TestFaultAlwaysAndClear(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	s.AddFault(Fault{Stage: StageMail, Reply: DailyLimit, Times: Always})

	for i := range 3 {
		if code := smtpCode(t, sendOne(t, s)); code != 550 {
			t.Errorf("attempt %d: code %d, want 550", i, code)
		}
	}
	s.ClearFaults()
	if err := sendOne(t, s); err != nil {
		t.Errorf("after ClearFaults: %v", err)
	}
}

func TestFaultDelay(t *testing.T) {
	s := Start(t, Options{CheckToken: tokenFor})
	s.AddFault(Fault{Stage: StageDataEnd, Delay: 200 * time.Millisecond})

	start := time.Now()
	if err := sendOne(t, s); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 200*time.Millisecond {
		t.Errorf("message took %v, want at least the 200ms delay", elapsed)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages recorded, want 1", n)
	}
}

func TestRejectRcpt(t *testing.T) {
	unknown := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	s := Start(t, Options{CheckToken: tokenFor, RejectRcpt: func(to string) *smtp.SMTPError {
		if to == "nobody@example.com" {
			return unknown
		}
		return nil
	}})
	c := dialClient(t, s)
	if err := c.Auth(&xoauth2Client{user: "a@example.com", token: "token-for-a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if code := smtpCode(t, c.Rcpt("nobody@example.com", nil)); code != 550 {
		t.Errorf("rejected RCPT code = %d, want 550", code)
	}
	if err := c.Rcpt("b@example.com", nil); err != nil {
		t.Errorf("accepted RCPT: %v", err)
	}
}

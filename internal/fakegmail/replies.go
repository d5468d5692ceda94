package fakegmail

import (
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// Canned Gmail replies. The server appends the connection id and " - gsmtp"
// when it sends them, as Gmail does. The Message fields contain the text
// that go-smtp's client reports, minus that suffix.
var (
	// TooManyLoginAttempts is Gmail's reply to AUTH when an account logs in
	// too often in quick succession.
	TooManyLoginAttempts = &smtp.SMTPError{
		Code:         454,
		EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message:      "Too many login attempts, please try again later.",
	}
	// DailyLimit is Gmail's reply when the account's daily sending quota is
	// used up. Gmail sends it after MAIL or after the end of DATA.
	DailyLimit = &smtp.SMTPError{
		Code:         550,
		EnhancedCode: smtp.EnhancedCode{5, 4, 5},
		Message: "Daily user sending limit exceeded. For more information on Gmail\n" +
			"https://support.google.com/mail/?p=ReachedSendingLimit",
	}
	// TooBig is Gmail's reply to the end of DATA for a message over its size
	// limit.
	TooBig = &smtp.SMTPError{
		Code:         552,
		EnhancedCode: smtp.EnhancedCode{5, 3, 4},
		Message: "Your message exceeded Google's message size limits. To view our\n" +
			"size guidelines, go to\n" +
			"https://support.google.com/mail/?p=MaxSizeError",
	}
	// TryAgainLater is Gmail's generic temporary rejection. The server
	// closes the connection after any 421 reply.
	TryAgainLater = &smtp.SMTPError{
		Code:         421,
		EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message:      "Try again later, closing connection.",
	}
	// TemporaryAuthFailure is Gmail's reply to AUTH when it cannot check
	// credentials for the moment.
	TemporaryAuthFailure = &smtp.SMTPError{
		Code:         454,
		EnhancedCode: smtp.EnhancedCode{4, 7, 0},
		Message:      "Cannot authenticate due to temporary system problem. Try again later.",
	}
	// TooManyRecipients is Gmail's reply to a RCPT over its recipient limit.
	TooManyRecipients = &smtp.SMTPError{
		Code:         452,
		EnhancedCode: smtp.EnhancedCode{4, 5, 3},
		Message:      "Your message has too many recipients.",
	}
	// BadCredentials is Gmail's final reply to a rejected XOAUTH2 token.
	BadCredentials = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 8},
		Message: "Username and Password not accepted. For more information, go to\n" +
			"https://support.google.com/mail/?p=BadCredentials",
	}
)

// Canned Microsoft 365 replies.
var (
	// AuthDisabledForTenant is the reply to AUTH from a tenant whose admin
	// has turned SMTP AUTH off.
	AuthDisabledForTenant = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 139},
		Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled " +
			"for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
	}
	// BasicAuthDisabled is the reply to AUTH LOGIN or PLAIN with a password.
	BasicAuthDisabled = &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 139},
		Message:      "Authentication unsuccessful, basic authentication is disabled.",
	}
)

// gmailSuffix ends most Gmail replies, after the connection id.
const gmailSuffix = " - gsmtp"

// greeting returns the 220 line the server sends on connect.
func (s *Server) greeting(id string) string {
	if s.opts.Flavor == Microsoft {
		return fmt.Sprintf("220 %s Microsoft ESMTP MAIL Service ready at %s",
			s.opts.Domain, time.Now().UTC().Format(time.RFC1123Z))
	}
	return fmt.Sprintf("220 %s ESMTP %s%s", s.opts.Domain, id, gmailSuffix)
}

// ehloLines returns the lines of the reply to EHLO, without reply codes.
func (s *Server) ehloLines(c *conn) []string {
	host := remoteHost(c)
	secure := c.isTLS()
	offerTLS := s.opts.TLS == StartTLS && !secure

	if s.opts.Flavor == Microsoft {
		lines := []string{
			fmt.Sprintf("%s Hello [%s]", s.opts.Domain, host),
			fmt.Sprintf("SIZE %d", s.opts.MaxMessageBytes),
			"PIPELINING", "DSN", "ENHANCEDSTATUSCODES",
		}
		if offerTLS {
			lines = append(lines, "STARTTLS")
		}
		if secure {
			lines = append(lines, "AUTH LOGIN XOAUTH2")
		}
		return append(lines, "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8")
	}

	lines := []string{
		fmt.Sprintf("%s at your service, [%s]", s.opts.Domain, host),
		fmt.Sprintf("SIZE %d", s.opts.MaxMessageBytes),
		"8BITMIME",
	}
	if offerTLS {
		lines = append(lines, "STARTTLS")
	}
	if secure {
		lines = append(lines, "AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH")
	}
	return append(lines, "ENHANCEDSTATUSCODES", "PIPELINING", "CHUNKING", "SMTPUTF8")
}

// rewrite pairs the start of a go-smtp success reply with the reply each
// flavour sends in its place.
type rewrite struct {
	prefix, gmail, microsoft string
}

var rewrites = []rewrite{
	{"250 2.0.0 Roger, accepting mail from", "250 2.1.0 OK", "250 2.1.0 Sender OK"},
	{"250 2.0.0 I'll make sure", "250 2.1.5 OK", "250 2.1.5 Recipient OK"},
	{"354 ", "354  Go ahead", "354 Start mail input; end with <CRLF>.<CRLF>"},
	{"250 2.0.0 OK: queued", "250 2.0.0 OK", "250 2.0.0 OK Queued mail for delivery"},
	{"250 2.0.0 Continue", "250 2.0.0 OK", "250 2.0.0 OK"},
	{"235 2.0.0 Authentication succeeded", "235 2.7.0 Accepted", "235 2.7.0 Authentication successful"},
	{"250 2.0.0 Session reset", "250 2.1.5 Flushed", "250 2.0.0 Resetting"},
	{"250 2.0.0 I have successfully done nothing", "250 2.0.0 OK", "250 2.0.0 OK"},
	{"221 2.0.0 Bye", "221 2.0.0 closing connection", "221 2.0.0 Service closing transmission channel"},
	{"250 2.0.0 Hello ", "250 %s at your service", "250 %s Hello"},
}

// rewriteReply turns one reply of go-smtp into the flavour's wording. The
// lines have no CRLF; all but the last have a hyphen after the code.
func (s *Server) rewriteReply(c *conn, lines []string) []string {
	last := lines[len(lines)-1]
	if len(lines) > 1 && strings.HasPrefix(lines[0], "250-Hello ") {
		ehlo := s.ehloLines(c)
		out := make([]string, len(ehlo))
		for i, l := range ehlo {
			sep := "-"
			if i == len(ehlo)-1 {
				sep = " "
			}
			out[i] = "250" + sep + l
		}
		return out
	}
	if len(lines) == 1 {
		for _, r := range rewrites {
			if !strings.HasPrefix(last, r.prefix) {
				continue
			}
			text := r.gmail
			if s.opts.Flavor == Microsoft {
				text = r.microsoft
			}
			if strings.Contains(text, "%s") {
				text = fmt.Sprintf(text, s.opts.Domain)
			}
			lines = []string{text}
			break
		}
	}
	if s.opts.Flavor == Gmail {
		lines = gmailStyle(lines, c.id)
	}
	return lines
}

// gmailStyle repeats the enhanced status code of the last line on every line
// and appends the connection id, as Gmail does. Replies 235 and 334 stay as
// they are.
func gmailStyle(lines []string, id string) []string {
	last := lines[len(lines)-1]
	if len(last) < 4 || last[:3] == "235" || last[:3] == "334" {
		return lines
	}
	if !strings.HasSuffix(last, gmailSuffix) {
		lines[len(lines)-1] = last + " " + id + gmailSuffix
	}
	code, ok := enhancedCode(last[4:])
	if !ok {
		return lines
	}
	for i := range len(lines) - 1 {
		if !strings.HasPrefix(lines[i][4:], code) {
			lines[i] = lines[i][:4] + code + " " + lines[i][4:]
		}
	}
	return lines
}

// enhancedCode returns the "x.y.z" at the start of text.
func enhancedCode(text string) (string, bool) {
	code, _, _ := strings.Cut(text, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return "", false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return "", false
		}
	}
	return code, true
}

// microsoftAuthFailure is the direct reply to a rejected XOAUTH2 token.
func (s *Server) microsoftAuthFailure() *smtp.SMTPError {
	return &smtp.SMTPError{
		Code:         535,
		EnhancedCode: smtp.EnhancedCode{5, 7, 3},
		Message:      fmt.Sprintf("Authentication unsuccessful [%s]", s.opts.Domain),
	}
}

// mustStartTLS is the reply to AUTH or MAIL before STARTTLS.
var mustStartTLS = &smtp.SMTPError{
	Code:         530,
	EnhancedCode: smtp.EnhancedCode{5, 7, 0},
	Message:      "Must issue a STARTTLS command first.",
}

// authRequired returns the reply to MAIL before AUTH.
func (s *Server) authRequired() *smtp.SMTPError {
	if s.opts.Flavor == Microsoft {
		return &smtp.SMTPError{
			Code:         530,
			EnhancedCode: smtp.EnhancedCode{5, 7, 57},
			Message:      "Client not authenticated to send mail.",
		}
	}
	// NOTE: the wording of Gmail's reply to MAIL without AUTH is a guess.
	return &smtp.SMTPError{
		Code:         530,
		EnhancedCode: smtp.EnhancedCode{5, 7, 0},
		Message: "Authentication Required. For more information, go to\n" +
			"https://support.google.com/mail/?p=WantAuthError",
	}
}

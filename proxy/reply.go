package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/bridgemail/bridge/auth"
)

// Local replies. Each gets the session id appended when it is sent.
var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errShuttingDown = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down, try again later"}
)

// replyError is an error that already carries the SMTP reply the client
// gets, and the log level and message for the cause.
type replyError struct {
	reply *smtp.SMTPError
	err   error
}

func (e *replyError) Error() string { return e.err.Error() }
func (e *replyError) Unwrap() error { return e.err }

// toReply turns any error of a session into the SMTP reply the client
// gets, and logs its cause. It is the one place where errors become
// replies: go-smtp would send a plain error as a permanent 554 with its
// internal text. The reply carries the session id, so a client's log line
// can be matched with the bridge's.
func (s *session) toReply(stage string, err error) *smtp.SMTPError {
	reply, level, msg := classify(err, s)
	s.log.Log(context.Background(), level, msg, "stage", stage, "err", err)
	if level >= slog.LevelWarn && s.user != nil {
		s.srv.activity.failed(s.user.Account, msg+": "+err.Error())
	}
	out := *reply
	out.Message = strings.TrimRight(out.Message, " \n") + " [" + s.id + "]"
	return &out
}

// classify picks the reply and the log level for err.
func classify(err error, s *session) (*smtp.SMTPError, slog.Level, string) {
	var (
		re        *replyError
		consent   *auth.ConsentError
		tokenErr  *auth.TokenError
		rejected  *authRejectedError
		disabled  *authDisabledError
		busy      *poolBusyError
		upErr     *upstreamError
		smtpErr   *smtp.SMTPError
		certErr   *tls.CertificateVerificationError
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		netErr    net.Error
	)
	switch {
	case errors.As(err, &re):
		return re.reply, slog.LevelWarn, "request rejected"

	case errors.As(err, &consent):
		return &smtp.SMTPError{
			Code:         535,
			EnhancedCode: smtp.EnhancedCode{5, 7, 8},
			Message: "The provider revoked or expired the consent for " + consent.Account +
				"; an administrator must run: bridge authorize " + s.userName,
		}, slog.LevelError, "consent revoked or expired; run: bridge authorize " + s.userName

	case errors.As(err, &tokenErr):
		msg := "token endpoint unavailable; messages are deferred until it answers"
		if !tokenErr.Temporary {
			msg = "token endpoint rejected the client; check client_id and client_secret of provider " + s.providerName
		}
		return &smtp.SMTPError{
			Code:         454,
			EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message:      "Cannot get an access token for " + tokenErr.Account + ", try again later",
		}, slog.LevelError, msg

	case errors.As(err, &disabled):
		return &smtp.SMTPError{
				Code:         535,
				EnhancedCode: smtpAuthDisabled,
				Message: "The provider has SMTP AUTH disabled for " + disabled.account +
					"; an administrator must enable authenticated SMTP for that mailbox",
			}, slog.LevelError, "SMTP AUTH is disabled for the mailbox or the tenant; enable it with: Set-CASMailbox -Identity " +
				disabled.account + " -SmtpClientAuthenticationDisabled $false (or for the tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false)"

	case errors.As(err, &rejected):
		return &smtp.SMTPError{
			Code:         535,
			EnhancedCode: smtp.EnhancedCode{5, 7, 8},
			Message: "The provider rejected a fresh access token for " + rejected.account +
				": " + oneLine(rejected.reply.Message),
		}, slog.LevelError, "upstream rejected a fresh access token; check that the account may use SMTP, then run: bridge authorize " + s.userName

	case errors.As(err, &busy):
		return &smtp.SMTPError{
			Code:         451,
			EnhancedCode: smtp.EnhancedCode{4, 4, 5},
			Message:      "All upstream connections for " + busy.account + " are busy, try again later",
		}, slog.LevelWarn, "all upstream connections of the account stayed busy; raise pool.max_conns if this repeats"

	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr):
		return &smtp.SMTPError{
			Code:         454,
			EnhancedCode: smtp.EnhancedCode{4, 7, 0},
			Message:      "Upstream TLS certificate did not verify, try again later",
		}, slog.LevelError, "upstream certificate did not verify; check upstream.address, server_name and ca_file"

	case errors.As(err, &upErr):
		if errors.As(upErr.err, &smtpErr) {
			return &smtp.SMTPError{
				Code:         451,
				EnhancedCode: smtp.EnhancedCode{4, 4, 0},
				Message:      "Upstream is not accepting connections, try again later",
			}, slog.LevelWarn, "upstream rejected the session"
		}
		if isTimeout(upErr.err) {
			return timeoutReply, slog.LevelWarn, "upstream timed out"
		}
		return &smtp.SMTPError{
			Code:         451,
			EnhancedCode: smtp.EnhancedCode{4, 4, 1},
			Message:      "Cannot reach upstream, try again later",
		}, slog.LevelWarn, "upstream unreachable"

	case errors.As(err, &smtpErr):
		if smtpErr.Code >= 400 && smtpErr.Code < 600 {
			// Gmail's own verdict, with its own codes. A multi-line
			// reply becomes one line, because go-smtp's server writes
			// the enhanced code on the last line only and clients read
			// it from the first.
			reply := *smtpErr
			reply.Message = oneLine(reply.Message)
			if reply.Code == 421 {
				// The upstream closed its connection, but this one
				// stays open, which 421 would announce.
				reply.Code = 451
			}
			if reply.EnhancedCode == smtp.EnhancedCodeNotSet || reply.EnhancedCode == smtp.NoEnhancedCode {
				reply.EnhancedCode = smtp.EnhancedCode{reply.Code / 100, 0, 0}
			}
			return &reply, slog.LevelInfo, "upstream rejected command"
		}

	case errors.Is(err, smtp.ErrDataReset):
		return &smtp.SMTPError{
			Code:         451,
			EnhancedCode: smtp.EnhancedCode{4, 3, 0},
			Message:      "Message transfer aborted",
		}, slog.LevelInfo, "client aborted the message"

	case isTimeout(err), errors.As(err, &netErr) && netErr.Timeout():
		return timeoutReply, slog.LevelWarn, "upstream timed out"

	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.As(err, new(*net.OpError)):
		return lostReply, slog.LevelWarn, "upstream connection lost"
	}

	return &smtp.SMTPError{
		Code:         451,
		EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message:      "Internal error, try again later",
	}, slog.LevelError, "unexpected error"
}

var (
	timeoutReply = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Upstream timed out, try again later"}
	lostReply    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Upstream connection lost, try again later"}
)

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

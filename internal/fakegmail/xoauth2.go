package fakegmail

import (
	"bytes"
	"errors"
	"strings"

	"github.com/emersion/go-smtp"
)

// gmailErrorChallenge is the JSON that Gmail sends base64-encoded in a 334
// challenge when it rejects a token.
const gmailErrorChallenge = `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`

// errCannotDecode is Gmail's reply to a malformed SASL response.
var errCannotDecode = &smtp.SMTPError{
	Code:         501,
	EnhancedCode: smtp.EnhancedCode{5, 5, 2},
	Message:      "Cannot Decode response",
}

// xoauth2Server is the server side of SASL XOAUTH2. The client response is
// "user=" user "\x01auth=Bearer " token "\x01\x01". It takes the response
// inline with AUTH or, after an empty 334, on a line of its own.
//
// Gmail rejects a token with a 334 JSON challenge, waits for the client's
// empty response and then sends 535. Microsoft sends 535 at once.
type xoauth2Server struct {
	sess     *session
	askedIR  bool
	rejected bool
}

func (x *xoauth2Server) Next(response []byte) ([]byte, bool, error) {
	srv := x.sess.srv
	if x.rejected {
		return nil, false, BadCredentials
	}
	if response == nil && !x.askedIR {
		x.askedIR = true
		return []byte{}, false, nil
	}

	user, token, err := parseXOAUTH2(response)
	if err != nil {
		srv.countAuthFailure()
		if srv.opts.Flavor == Microsoft {
			return nil, false, srv.microsoftAuthFailure()
		}
		return nil, false, errCannotDecode
	}
	if srv.opts.CheckToken != nil && srv.opts.CheckToken(user, token) {
		x.sess.user = user
		return nil, true, nil
	}

	srv.countAuthFailure()
	if srv.opts.Flavor == Microsoft {
		return nil, false, srv.microsoftAuthFailure()
	}
	x.rejected = true
	return []byte(gmailErrorChallenge), false, nil
}

// parseXOAUTH2 splits an XOAUTH2 client response into user and token.
func parseXOAUTH2(response []byte) (user, token string, err error) {
	body, ok := bytes.CutSuffix(response, []byte("\x01\x01"))
	if !ok {
		return "", "", errors.New("XOAUTH2 response does not end in two ^A")
	}
	for _, field := range strings.Split(string(body), "\x01") {
		key, value, ok := strings.Cut(field, "=")
		if !ok {
			return "", "", errors.New("XOAUTH2 field without =")
		}
		switch key {
		case "user":
			user = value
		case "auth":
			scheme, t, ok := strings.Cut(value, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				return "", "", errors.New("XOAUTH2 auth is not a Bearer token")
			}
			token = t
		}
	}
	if user == "" || token == "" {
		return "", "", errors.New("XOAUTH2 response without user or token")
	}
	return user, token, nil
}

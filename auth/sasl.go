package auth

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/emersion/go-sasl"
)

// XOAuth2 is the SASL mechanism name that Gmail and Exchange Online accept
// for OAuth 2.0 access tokens.
const XOAuth2 = "XOAUTH2"

// XOAuth2Challenge is the JSON error that Gmail sends in a 334 challenge
// when it rejects an access token.
type XOAuth2Challenge struct {
	Status  string `json:"status"`
	Schemes string `json:"schemes"`
	Scope   string `json:"scope"`
}

// XOAuth2Client is a sasl.Client for the XOAUTH2 mechanism. After Auth
// fails, Challenge holds the server's error challenge, if it sent one.
type XOAuth2Client struct {
	User  string
	Token string

	Challenge *XOAuth2Challenge
	steps     int
}

// Start returns the initial response
// "user=" user "\x01auth=Bearer " token "\x01\x01".
func (c *XOAuth2Client) Start() (string, []byte, error) {
	return XOAuth2, []byte("user=" + c.User + "\x01auth=Bearer " + c.Token + "\x01\x01"), nil
}

// Next replies to the server's error challenge with the empty response
// that the mechanism requires, after which the server sends its final
// reply. A
// second challenge is a protocol error.
func (c *XOAuth2Client) Next(challenge []byte) ([]byte, error) {
	c.steps++
	if c.steps > 1 {
		return nil, errors.New("xoauth2: unexpected second challenge")
	}
	var ch XOAuth2Challenge
	if err := json.Unmarshal(challenge, &ch); err == nil {
		c.Challenge = &ch
	}
	return []byte{}, nil
}

var _ sasl.Client = (*XOAuth2Client)(nil)

// Login is the SASL LOGIN mechanism, which go-sasl offers only as a client.
const Login = "LOGIN"

// LoginAuthenticator checks a username and password.
type LoginAuthenticator func(username, password string) error

type loginServer struct {
	authenticate LoginAuthenticator
	username     string
	step         int
}

// NewLoginServer returns a sasl.Server for LOGIN. It sends the challenges
// "Username:" and "Password:" that clients expect. An initial response is
// taken as the username, the form many printers send.
func NewLoginServer(authenticate LoginAuthenticator) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

func (s *loginServer) Next(response []byte) ([]byte, bool, error) {
	s.step++
	switch s.step {
	case 1:
		if response == nil {
			// No initial response, so ask for the username.
			s.step = 0
			return []byte("Username:"), false, nil
		}
		s.username = string(response)
		return []byte("Password:"), false, nil
	case 2:
		return nil, true, s.authenticate(s.username, string(response))
	}
	return nil, false, fmt.Errorf("sasl login: unexpected response")
}

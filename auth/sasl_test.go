package auth

import (
	"errors"
	"testing"
)

func TestLoginServerWithoutInitialResponse(t *testing.T) {
	var gotUser, gotPass string
	s := NewLoginServer(func(u, p string) error { gotUser, gotPass = u, p; return nil })

	ch, done, err := s.Next(nil)
	if err != nil || done || string(ch) != "Username:" {
		t.Fatalf("step 1: %q %v %v", ch, done, err)
	}
	ch, done, err = s.Next([]byte("alice"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("step 2: %q %v %v", ch, done, err)
	}
	_, done, err = s.Next([]byte("secret"))
	if err != nil || !done {
		t.Fatalf("step 3: %v %v", done, err)
	}
	if gotUser != "alice" || gotPass != "secret" {
		t.Errorf("got %q/%q", gotUser, gotPass)
	}
}

func TestLoginServerUsernameAsInitialResponse(t *testing.T) {
	var gotUser string
	s := NewLoginServer(func(u, p string) error { gotUser = u; return nil })
	ch, done, err := s.Next([]byte("printer"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("step 1: %q %v %v", ch, done, err)
	}
	if _, done, err = s.Next([]byte("pw")); err != nil || !done {
		t.Fatalf("step 2: %v %v", done, err)
	}
	if gotUser != "printer" {
		t.Errorf("user = %q", gotUser)
	}
}

func TestLoginServerPassesAuthError(t *testing.T) {
	bad := errors.New("bad")
	s := NewLoginServer(func(u, p string) error { return bad })
	s.Next([]byte("u"))
	if _, _, err := s.Next([]byte("p")); !errors.Is(err, bad) {
		t.Errorf("err = %v", err)
	}
}

func TestXOAuth2InitialResponse(t *testing.T) {
	c := &XOAuth2Client{User: "a@example.com", Token: "ya29.tok"}
	mech, ir, err := c.Start()
	if err != nil || mech != "XOAUTH2" {
		t.Fatalf("%s %v", mech, err)
	}
	if want := "user=a@example.com\x01auth=Bearer ya29.tok\x01\x01"; string(ir) != want {
		t.Errorf("ir = %q, want %q", ir, want)
	}
}

func TestXOAuth2ErrorChallenge(t *testing.T) {
	c := &XOAuth2Client{User: "a", Token: "t"}
	resp, err := c.Next([]byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("resp = %q err = %v, want empty response", resp, err)
	}
	if c.Challenge == nil || c.Challenge.Status != "400" || c.Challenge.Scope != "https://mail.google.com/" {
		t.Errorf("challenge = %+v", c.Challenge)
	}
	if _, err := c.Next([]byte("again")); err == nil {
		t.Error("second challenge accepted")
	}
}

func TestXOAuth2ChallengeNotJSON(t *testing.T) {
	c := &XOAuth2Client{User: "a", Token: "t"}
	resp, err := c.Next([]byte("not json"))
	if err != nil || len(resp) != 0 {
		t.Fatalf("resp = %q err = %v", resp, err)
	}
	if c.Challenge != nil {
		t.Errorf("challenge = %+v, want nil", c.Challenge)
	}
}

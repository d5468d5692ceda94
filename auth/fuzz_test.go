package auth

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzXOAuth2Challenge feeds any error challenge to the XOAUTH2 client.
// The first challenge always gets the empty response the mechanism
// requires, whatever it holds, and a second one is an error.
func FuzzXOAuth2Challenge(f *testing.F) {
	f.Fuzz(func(t *testing.T, challenge []byte) {
		c := &XOAuth2Client{User: "scanner@example.com", Token: "ya29.token"}
		resp, err := c.Next(challenge)
		if err != nil || resp == nil || len(resp) != 0 {
			t.Fatalf("Next = %q, %v, want an empty response", resp, err)
		}
		var probe XOAuth2Challenge
		if json.Unmarshal(challenge, &probe) == nil {
			if c.Challenge == nil || *c.Challenge != probe {
				t.Errorf("challenge %q parsed as %+v, want %+v", challenge, c.Challenge, probe)
			}
		} else if c.Challenge != nil {
			t.Errorf("challenge %q is not JSON but parsed as %+v", challenge, c.Challenge)
		}
		if _, err := c.Next(challenge); err == nil {
			t.Error("second challenge accepted")
		}
		if _, ir, _ := c.Start(); !bytes.HasPrefix(ir, []byte("user=scanner@example.com\x01")) {
			t.Errorf("initial response changed after a challenge: %q", ir)
		}
	})
}

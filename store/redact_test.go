package store

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestSecretsRedactedWhenLogged(t *testing.T) {
	const token, hash = "1//0gPLANTED-REFRESH-TOKEN", "$argon2id$v=19$m=65536,t=1,p=4$PLANTEDHASH"
	a := Account{Address: "a@example.com", Provider: "google", RefreshToken: token}
	u := User{Name: "printer", Account: "a@example.com", PasswordHash: hash}

	var out bytes.Buffer
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&out, format+" "+format+"\n", a, u)
		fmt.Fprintf(&out, format+" "+format+"\n", &a, &u)
	}
	text := slog.New(slog.NewTextHandler(&out, nil))
	text.Info("text", "account", a, "user", u, "pointer", &a)
	js := slog.New(slog.NewJSONHandler(&out, nil))
	js.Info("json", "account", a, "user", u, "pointer", &a)

	for _, secret := range []string{token, hash, "PLANTED"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("output contains %q:\n%s", secret, out.String())
		}
	}
	if !strings.Contains(out.String(), "a@example.com") || !strings.Contains(out.String(), "[redacted]") {
		t.Errorf("output lacks the address or the placeholder:\n%s", out.String())
	}
}

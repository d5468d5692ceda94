package auth

import (
	"fmt"
	"log/slog"
)

// LogValue makes slog print the client without its access token.
func (c XOAuth2Client) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.User), slog.String("token", redactedToken(c.Token)))
}

// String formats the client without its access token, for %v and %+v.
func (c XOAuth2Client) String() string {
	return fmt.Sprintf("{user:%s token:%s}", c.User, redactedToken(c.Token))
}

// GoString formats the client for %#v, also without its access token.
func (c XOAuth2Client) GoString() string { return "auth.XOAuth2Client" + c.String() }

func redactedToken(token string) string {
	if token == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue makes slog print the provider without its client secret, which
// json.Marshal of the oauth2.Config inside would show.
func (p *Provider) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("name", p.Name), slog.String("kind", p.Kind),
		slog.String("upstream", p.Upstream.Address)}
	if p.OAuth != nil {
		attrs = append(attrs, slog.String("client_id", p.OAuth.ClientID),
			slog.String("client_secret", redactedToken(p.OAuth.ClientSecret)))
	}
	return slog.GroupValue(attrs...)
}

package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/oauth2"

	"github.com/bridgemail/bridge/config"
)

// accountAddress returns the consenting account's address, in lower case:
// the email claim of the ID token if there is one, or else the email of
// the OpenID Connect userinfo endpoint.
func (p *Provider) accountAddress(ctx context.Context, client *http.Client, tok *oauth2.Token) (string, error) {
	if raw, ok := tok.Extra("id_token").(string); ok && raw != "" {
		email, err := p.idTokenEmail(raw)
		if err != nil {
			return "", fmt.Errorf("reading the ID token: %w", err)
		}
		if email != "" {
			return strings.ToLower(email), nil
		}
	}
	if p.UserinfoURL == "" {
		return "", errors.New("the token response has no ID token with an email claim, and no userinfo_url is configured")
	}
	email, err := userinfoEmail(ctx, client, p.UserinfoURL, tok.AccessToken)
	if err != nil {
		return "", fmt.Errorf("reading the account address from %s: %w", p.UserinfoURL, err)
	}
	return strings.ToLower(email), nil
}

// idClaims are the claims of an OpenID Connect ID token that the bridge
// reads.
type idClaims struct {
	Email string `json:"email"`
	// PreferredUsername is the sign-in name; Microsoft's ID tokens carry
	// the mailbox address here when they have no email claim.
	PreferredUsername string `json:"preferred_username"`
	// Audience is a string or an array of strings (OpenID Connect Core
	// section 2).
	Audience json.RawMessage `json:"aud"`
}

// idTokenEmail returns the email claim of an ID token. The signature is
// not checked: the token came straight from the token endpoint over TLS,
// which OpenID Connect Core section 3.1.3.7 accepts in place of it. The
// audience must still be this client.
func (p *Provider) idTokenEmail(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("not a JWT: %d parts, expected 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return "", fmt.Errorf("decoding the payload: %w", err)
	}
	var c idClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("decoding the claims: %w", err)
	}
	if len(c.Audience) > 0 && !audienceContains(c.Audience, p.OAuth.ClientID) {
		return "", fmt.Errorf("the audience %s is not the client id %s", c.Audience, p.OAuth.ClientID)
	}
	if c.Email == "" && p.Kind == config.KindMicrosoft && strings.Contains(c.PreferredUsername, "@") {
		return c.PreferredUsername, nil
	}
	return c.Email, nil
}

func audienceContains(aud json.RawMessage, clientID string) bool {
	var one string
	if json.Unmarshal(aud, &one) == nil {
		return one == clientID
	}
	var many []string
	return json.Unmarshal(aud, &many) == nil && slices.Contains(many, clientID)
}

// userinfoEmail returns the email of the OpenID Connect userinfo response
// for accessToken.
func userinfoEmail(ctx context.Context, client *http.Client, userinfoURL, accessToken string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, userinfoURL, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s: %.200s", resp.Status, body)
	}
	var info struct {
		Email string `json:"email"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return "", fmt.Errorf("decoding the response: %w", err)
	}
	if info.Email == "" {
		return "", errors.New("the response has no email")
	}
	return info.Email, nil
}

package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

func TestLeafVerifiesForHosts(t *testing.T) {
	c := New(t)
	for _, host := range Hosts {
		opts := x509.VerifyOptions{Roots: c.CAPool(), DNSName: host}
		if _, err := c.Leaf.Leaf.Verify(opts); err != nil {
			t.Errorf("verifying leaf for %s: %v", host, err)
		}
	}
}

func TestUntrustedLeafFailsVerification(t *testing.T) {
	trusted := New(t)
	other := NewUntrusted(t)
	opts := x509.VerifyOptions{Roots: trusted.CAPool(), DNSName: "localhost"}
	if _, err := other.Leaf.Leaf.Verify(opts); err == nil {
		t.Fatal("untrusted leaf verified against the trusted CA")
	}
}

func TestFilesLoad(t *testing.T) {
	c := New(t)
	if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
		t.Fatalf("loading key pair: %v", err)
	}
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(caPEM) {
		t.Fatal("CA file contains no certificate")
	}
}

func TestHandshakeOverLoopback(t *testing.T) {
	c := New(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerTLS())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.(*tls.Conn).Handshake()
	}()

	conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientTLS("127.0.0.1"))
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	conn.Close()
}

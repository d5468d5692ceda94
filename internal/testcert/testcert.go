// Package testcert generates throwaway TLS certificates for tests: a CA and
// a leaf certificate for localhost, 127.0.0.1 and ::1, kept in memory and
// also written as PEM files in the test's temporary directory.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Hosts lists the names and addresses the leaf certificate is valid for.
var Hosts = []string{"localhost", "127.0.0.1", "::1"}

// Certs is a CA and a leaf certificate signed by it. The leaf is valid for
// Hosts from one hour ago until one day from now.
type Certs struct {
	// CA is the self-signed certificate authority.
	CA *x509.Certificate
	// Leaf is the server certificate, chained to CA.
	Leaf tls.Certificate

	// CAFile, CertFile and KeyFile are PEM files in a t.TempDir() directory:
	// the CA certificate, the leaf certificate and the leaf's PKCS #8 key.
	CAFile, CertFile, KeyFile string
}

// New generates an ECDSA P-256 CA and a leaf certificate for Hosts, with
// the PEM files in t.TempDir(). It calls t.Fatal on any error.
func New(t testing.TB) *Certs {
	t.Helper()
	c, err := Generate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Generate is New for programs outside tests, such as a benchmark: it
// writes the PEM files into dir, which must exist.
func Generate(dir string) (*Certs, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	caTemplate := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "bridge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if caTemplate.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating leaf key: %w", err)
	}
	leafTemplate := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if leafTemplate.SerialNumber, err = serial(); err != nil {
		return nil, err
	}
	for _, h := range Hosts {
		if ip := net.ParseIP(h); ip != nil {
			leafTemplate.IPAddresses = append(leafTemplate.IPAddresses, ip)
		} else {
			leafTemplate.DNSNames = append(leafTemplate.DNSNames, h)
		}
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("parsing leaf certificate: %w", err)
	}

	c := &Certs{
		CA: ca,
		Leaf: tls.Certificate{
			Certificate: [][]byte{leafDER},
			PrivateKey:  leafKey,
			Leaf:        leaf,
		},
	}
	if err := c.writeFiles(dir, caDER, leafDER, leafKey); err != nil {
		return nil, err
	}
	return c, nil
}

// NewUntrusted returns certificates from a fresh CA of their own. A server
// that presents its leaf fails verification against the pool of any other
// Certs, which is how tests model an upstream certificate that does not
// verify.
func NewUntrusted(t testing.TB) *Certs {
	t.Helper()
	return New(t)
}

// CAPool returns a new pool that contains only the CA certificate.
func (c *Certs) CAPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(c.CA)
	return pool
}

// ServerTLS returns a new server configuration that presents the leaf
// certificate. Each call returns a separate value that the caller may modify.
func (c *Certs) ServerTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{c.Leaf},
		MinVersion:   tls.VersionTLS12,
	}
}

// ClientTLS returns a new client configuration that trusts only the CA and
// expects serverName in the certificate.
func (c *Certs) ClientTLS(serverName string) *tls.Config {
	return &tls.Config{
		RootCAs:    c.CAPool(),
		ServerName: serverName,
		MinVersion: tls.VersionTLS12,
	}
}

func (c *Certs) writeFiles(dir string, caDER, leafDER []byte, leafKey *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return fmt.Errorf("encoding leaf key: %w", err)
	}
	c.CAFile = filepath.Join(dir, "ca.pem")
	c.CertFile = filepath.Join(dir, "cert.pem")
	c.KeyFile = filepath.Join(dir, "key.pem")
	files := []struct {
		path, blockType string
		der             []byte
		mode            os.FileMode
	}{
		{c.CAFile, "CERTIFICATE", caDER, 0o644},
		{c.CertFile, "CERTIFICATE", leafDER, 0o644},
		{c.KeyFile, "PRIVATE KEY", keyDER, 0o600},
	}
	for _, f := range files {
		data := pem.EncodeToMemory(&pem.Block{Type: f.blockType, Bytes: f.der})
		if err := os.WriteFile(f.path, data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", f.path, err)
		}
	}
	return nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}

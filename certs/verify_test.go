package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/certtest"
)

// TestVerifyRefusesCACertificates: a certificate that can sign certificates never
// identifies a client, whether it is the trusted root itself, an intermediate with
// client-auth usage, or a leaf whose key usage allows certificate signing.
func TestVerifyRefusesCACertificates(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	v, err := NewVerifier(ca.CertPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(isCA, constraints bool, usage x509.KeyUsage) *x509.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "billing"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: usage,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, BasicConstraintsValid: constraints, IsCA: isCA}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for name, tc := range map[string]struct {
		cert *x509.Certificate
		err  error
	}{
		"the root itself":          {ca.Cert, ErrCACert},
		"an intermediate CA":       {issue(true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature), ErrCACert},
		"cert-sign usage, not CA":  {issue(false, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature), ErrCACert},
		"cert-sign, no constraint": {issue(false, false, x509.KeyUsageCertSign), ErrCACert},
		"a client certificate":     {issue(false, true, x509.KeyUsageDigitalSignature), nil},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(tc.cert.Raw); !errors.Is(err, tc.err) {
				t.Fatalf("Verify: %v, want %v", err, tc.err)
			}
		})
	}
}

// TestClientCAReloader: a Reloader with only a CA bundle and a CRL makes a new Verifier
// when the CRL changes (so caches keyed by the Verifier start over), keeps the old one
// when the new file is broken or unchanged, and counts both outcomes.
func TestClientCAReloader(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	client := ca.Issue(t, certtest.LeafOptions{CommonName: "billing"})
	dir := t.TempDir()
	crlFile := dir + "/crl.pem"
	writeFile(t, crlFile, ca.CRL(t))
	var reloaded int
	r, err := NewReloader(ReloaderConfig{ClientCAFile: ca.CertFile, CRLFile: crlFile, OnReload: func() { reloaded++ }})
	if err != nil {
		t.Fatal(err)
	}
	first := r.Verifier()
	if _, err := first.VerifyCert(client.Cert); err != nil {
		t.Fatalf("before the revoke: %v", err)
	}
	if err := r.Reload(); err != nil || r.Verifier() != first || reloaded != 0 {
		t.Fatalf("an unchanged reload: %v, same verifier %v, %d reloads reported", err, r.Verifier() == first, reloaded)
	}
	writeFile(t, crlFile, ca.CRL(t, client))
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	second := r.Verifier()
	if second == first || reloaded != 1 {
		t.Fatalf("a new CRL: new verifier %v, %d reloads reported", second != first, reloaded)
	}
	if _, err := second.VerifyCert(client.Cert); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after the revoke: %v", err)
	}
	for name, content := range map[string][]byte{
		"garbage":           []byte("-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n"),
		"another CA's CRL":  certtest.NewCA(t, "other").CRL(t),
		"an empty CRL file": nil,
	} {
		writeFile(t, crlFile, content)
		if err := r.Reload(); err == nil || r.Verifier() != second {
			t.Fatalf("%s: err %v, verifier kept %v", name, err, r.Verifier() == second)
		}
	}
	if _, failures := r.Stats(); failures != 3 {
		t.Fatalf("%d failures counted", failures)
	}
	if _, err := NewReloader(ReloaderConfig{CRLFile: crlFile}); err == nil {
		t.Fatal("a CRL without a CA bundle was accepted")
	}
}

func writeFile(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

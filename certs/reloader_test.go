package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type pki struct {
	dir               string
	ca                Bundle
	caFile, crlFile   string
	certFile, keyFile string
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	var err error
	if p.ca, err = NewCA("test CA", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	p.caFile = p.write(t, "ca.pem", p.ca.CertPEM)
	crl, err := CRL(p.ca, 1, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p.crlFile = p.write(t, "crl.pem", crl)
	srv := p.issue(t, IssueOptions{CommonName: "keygate v1", Server: true, DNSNames: []string{"127.0.0.1"}, TTL: time.Hour})
	p.certFile, p.keyFile = p.write(t, "server.pem", srv.CertPEM), p.write(t, "server-key.pem", srv.KeyPEM)
	return p
}

func (p *pki) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	// Write aside and rename, as a deployment tool would: a reader sees old or new.
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *pki) issue(t *testing.T, o IssueOptions) Bundle {
	t.Helper()
	b, err := Issue(p.ca, o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serveTLS accepts connections with cfg and completes each handshake.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				buf := make([]byte, 1)
				_, _ = c.Read(buf)
			}()
		}
	}()
	return l.Addr().String()
}

// dial completes a handshake (and the server's verification of the client) and returns
// the server certificate's common name.
func dial(addr string, caPEM []byte, client *Bundle) (string, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if client != nil {
		kp, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
		if err != nil {
			return "", err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return "", err
	}
	defer c.Close()
	// In TLS 1.3 the server's verdict on the client certificate arrives after the
	// client's handshake ends: a read surfaces it.
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return "", err
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

func TestMTLSListener(t *testing.T) {
	p := newPKI(t)
	good := p.issue(t, IssueOptions{CommonName: "billing", TTL: time.Hour})
	revoked := p.issue(t, IssueOptions{CommonName: "revoked", TTL: time.Hour})
	crl, _ := CRL(p.ca, 2, []Revoked{{Serial: revoked.Cert.SerialNumber, At: time.Now()}}, time.Hour)
	p.write(t, "crl.pem", crl)
	other, _ := NewCA("other", time.Hour)
	foreign, _ := Issue(other, IssueOptions{CommonName: "intruder", TTL: time.Hour})
	r, err := NewReloader(ReloaderConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, CRLFile: p.crlFile, RequireClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r.TLSConfig())
	if cn, err := dial(addr, p.ca.CertPEM, &good); err != nil || cn != "keygate v1" {
		t.Fatalf("good client: %q %v", cn, err)
	}
	for name, c := range map[string]*Bundle{"no certificate": nil, "revoked": &revoked, "foreign CA": &foreign} {
		if _, err := dial(addr, p.ca.CertPEM, c); err == nil {
			t.Errorf("%s: handshake accepted", name)
		}
	}
}

func TestReload(t *testing.T) {
	p := newPKI(t)
	client := p.issue(t, IssueOptions{CommonName: "billing", TTL: time.Hour})
	r, err := NewReloader(ReloaderConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, RequireClientCert: true})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, r.TLSConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var reported []error
	go r.Watch(ctx, 20*time.Millisecond, func(err error) { reported = append(reported, err) })

	next := p.issue(t, IssueOptions{CommonName: "keygate v2", Server: true, DNSNames: []string{"127.0.0.1"}, TTL: time.Hour})
	p.write(t, "server-key.pem", next.KeyPEM)
	p.write(t, "server.pem", next.CertPEM)
	waitUntil(t, func() bool { cn, _ := dial(addr, p.ca.CertPEM, &client); return cn == "keygate v2" }, "the new certificate is never served")

	// A broken file keeps the old state and is reported.
	p.write(t, "server.pem", []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	waitUntil(t, func() bool { _, f := r.Stats(); return f > 0 }, "the broken file was never reported")
	if cn, err := dial(addr, p.ca.CertPEM, &client); err != nil || cn != "keygate v2" {
		t.Fatalf("after a broken reload: %q %v", cn, err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate")
	}
}

func waitUntil(t *testing.T, cond func() bool, failure string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCNSAProfile checks the profile with openssl, the client a CNSA site would use.
func TestCNSAProfile(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	p := newPKI(t)
	client := p.issue(t, IssueOptions{CommonName: "billing", TTL: time.Hour})
	cf, kf := p.write(t, "client.pem", client.CertPEM), p.write(t, "client-key.pem", client.KeyPEM)
	r, err := NewReloader(ReloaderConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, RequireClientCert: true, Profile: ProfileCNSA})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(serveTLS(t, r.TLSConfig()))
	sClient := func(extra ...string) (string, error) {
		args := append([]string{"s_client", "-connect", "127.0.0.1:" + port, "-CAfile", p.caFile, "-cert", cf, "-key", kf, "-brief"}, extra...)
		cmd := exec.Command("openssl", args...)
		// Input that ends only after a moment: in TLS 1.3 the server's verdict arrives
		// after the client's handshake, and s_client must still be reading.
		pr, pw := io.Pipe()
		go func() { time.Sleep(500 * time.Millisecond); pw.Close() }()
		cmd.Stdin = pr
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := sClient("-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384", "-groups", "P-384"); err != nil || !strings.Contains(out, "TLS_AES_256_GCM_SHA384") {
		t.Fatalf("CNSA client refused: %v\n%s", err, out)
	}
	for name, extra := range map[string][]string{
		"TLS 1.2":     {"-tls1_2"},
		"AES-128":     {"-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"},
		"X25519 only": {"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384", "-groups", "X25519"},
	} {
		// The server ends the handshake with an alert; AES-128 gets as far as a
		// negotiated suite, which VerifyConnection then refuses.
		if out, err := sClient(extra...); err == nil || !strings.Contains(out, "alert") {
			t.Errorf("%s not refused by the cnsa profile (%v):\n%s", name, err, out)
		}
	}
	// A non-P-384 server certificate is refused for the profile.
	if _, err := NewReloader(ReloaderConfig{CertFile: p.certFile, KeyFile: p.keyFile, Profile: "fips"}); err == nil {
		t.Fatal("unknown profile accepted")
	}
}

func TestWatchReloadsOnlyOnChange(t *testing.T) {
	p := newPKI(t)
	r, err := NewReloader(ReloaderConfig{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile, CRLFile: p.crlFile})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if r.changed() {
			t.Fatal("unchanged files read as changed")
		}
	}
	crl, _ := CRL(p.ca, 5, nil, time.Hour)
	p.write(t, "crl.pem", crl)
	if !r.changed() {
		t.Fatal("a new CRL went unnoticed")
	}
}

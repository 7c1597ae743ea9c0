package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/certs"
)

// TestPKICommands runs the private PKI end to end and checks its output with keygate's
// own verifier and with openssl, which no one here wrote.
func TestPKICommands(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca")
	run := func(args ...string) string {
		t.Helper()
		out, stderr, err := cli(t, args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		return out
	}
	run("certs", "init-ca", "--dir", ca, "--name", "Air-gapped CA")
	if _, _, err := cli(t, "certs", "init-ca", "--dir", ca); err == nil {
		t.Fatal("init-ca overwrote an existing CA")
	}
	if st, err := os.Stat(filepath.Join(ca, "ca-key.pem")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key mode: %v %v", st, err)
	}
	client := filepath.Join(dir, "billing")
	server := filepath.Join(dir, "keygate")
	run("certs", "issue", "--ca-dir", ca, "--client", "--cn", "billing", "--spiffe-id", "spiffe://example.org/ns/prod/sa/billing", "--ttl", "30d", "--out", client)
	run("certs", "issue", "--ca-dir", ca, "--server", "--dns", "keygate.internal,127.0.0.1", "--out", server)

	report := run("certs", "inspect", client+".pem", "--ca", filepath.Join(ca, "ca.pem"))
	for _, want := range []string{"CN=billing", "spiffe://example.org/ns/prod/sa/billing", "ECDSA P-384", "client auth",
		"chain:           ok", "30 days to expiry", "issuer:          CN=Air-gapped CA"} {
		if !strings.Contains(report, want) {
			t.Errorf("inspect lacks %q:\n%s", want, report)
		}
	}
	if r := run("certs", "inspect", server+".pem"); !strings.Contains(r, "keygate.internal") || !strings.Contains(r, "127.0.0.1") || !strings.Contains(r, "server auth") {
		t.Errorf("server certificate:\n%s", r)
	}
	foreign := filepath.Join(dir, "other")
	run("certs", "init-ca", "--dir", foreign)
	if r := run("certs", "inspect", client+".pem", "--ca", filepath.Join(foreign, "ca.pem")); !strings.Contains(r, "chain:           FAILS") {
		t.Errorf("inspect against another CA:\n%s", r)
	}

	caPEM, _ := os.ReadFile(filepath.Join(ca, "ca.pem"))
	clientPEM, _ := os.ReadFile(client + ".pem")
	verify := func() error {
		crl, err := os.ReadFile(filepath.Join(ca, "crl.pem"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := certs.NewVerifier(caPEM, crl, nil)
		if err != nil {
			t.Fatal(err)
		}
		der, err := certs.DecodeEnvoyPEM(string(clientPEM))
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(der)
		return err
	}
	if err := verify(); err != nil {
		t.Fatalf("fresh client certificate: %v", err)
	}
	openssl := func() error {
		return exec.Command("openssl", "verify", "-CAfile", filepath.Join(ca, "ca.pem"), "-crl_check",
			"-CRLfile", filepath.Join(ca, "crl.pem"), client+".pem").Run()
	}
	if err := openssl(); err != nil {
		t.Fatalf("openssl verify of the fresh certificate: %v", err)
	}
	if r := run("certs", "inspect", client+".pem", "--ca-dir", ca); !strings.Contains(r, "status:          valid") || !strings.Contains(r, "crl:             not listed") {
		t.Errorf("inspect --ca-dir before the revoke:\n%s", r)
	}
	run("certs", "revoke", "--ca-dir", ca, client+".pem")
	for _, args := range [][]string{{"--ca-dir", ca}, {"--ca", filepath.Join(ca, "ca.pem"), "--crl", filepath.Join(ca, "crl.pem")}} {
		if r := run(append([]string{"certs", "inspect", client + ".pem"}, args...)...); !strings.Contains(r, "status:          revoked\n") || !strings.Contains(r, "crl:             listed") {
			t.Errorf("inspect %v after the revoke:\n%s", args, r)
		}
	}
	// A CRL signed by another CA is refused, not believed.
	if _, _, err := cli(t, "certs", "inspect", client+".pem", "--ca", filepath.Join(foreign, "ca.pem"), "--crl", filepath.Join(ca, "crl.pem")); err == nil {
		t.Error("inspect believed a CRL its CA did not sign")
	}
	if err := verify(); !errors.Is(err, certs.ErrRevoked) {
		t.Fatalf("revoked client certificate: %v", err)
	}
	if err := openssl(); err == nil {
		t.Fatal("openssl still accepts the revoked certificate")
	}
}

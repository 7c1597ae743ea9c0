package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// revocationFixture is a running keygate serve that admits certificates named
// "billing" by identity rule, with client_certs read from a CA made by keygate certs.
type revocationFixture struct {
	p       *process
	caDir   string
	a, b, c []byte // three billing certificates (PEM)
	aFile   string
	bFile   string
}

func newRevocationFixture(t *testing.T, reloadInterval string) *revocationFixture {
	t.Helper()
	base := useVault(t)
	dir := t.TempDir()
	fx := &revocationFixture{caDir: filepath.Join(dir, "ca")}
	mustCLI(t, "certs", "init-ca", "--dir", fx.caDir)
	issue := func(name string) ([]byte, string) {
		out := filepath.Join(dir, name)
		mustCLI(t, "certs", "issue", "--ca-dir", fx.caDir, "--client", "--cn", "billing", "--out", out)
		pem, err := os.ReadFile(out + ".pem")
		if err != nil {
			t.Fatal(err)
		}
		return pem, out + ".pem"
	}
	fx.a, fx.aFile = issue("a")
	fx.b, fx.bFile = issue("b")
	fx.c, _ = issue("c")
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
tls: {reload_interval: %s}
client_certs:
  ca_file: %s
  crl_file: %s
  identity_rules: [{name: billing, cn: billing, scopes: [models:read]}]
`, base, reloadInterval, filepath.Join(fx.caDir, "ca.pem"), filepath.Join(fx.caDir, "crl.pem")))
	fx.p = startProcess(t, cfg)
	return fx
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := cli(t, args...)
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr)
	}
	return out
}

// revoke revokes a and b (b was never presented) with keygate certs revoke.
func (fx *revocationFixture) revoke(t *testing.T) {
	t.Helper()
	mustCLI(t, "certs", "revoke", "--ca-dir", fx.caDir, fx.aFile)
	mustCLI(t, "certs", "revoke", "--ca-dir", fx.caDir, fx.bFile)
}

// TestRevocationReachesServeByPoll: keygate certs revoke rewrites the CRL; a running
// keygate serve refuses the revoked certificates once it polls the file, including one
// it never saw before, and its cache of verified certificates does not outlive the
// change.
func TestRevocationReachesServeByPoll(t *testing.T) {
	fx := newRevocationFixture(t, "200ms")
	if code := fx.p.check(t, "", fx.a); code != http.StatusOK {
		t.Fatalf("a billing certificate got %d before the revoke", code)
	}
	fx.revoke(t)
	deadline := time.Now().Add(15 * time.Second) // the interval is 200 ms; this only bounds the wait
	for fx.p.check(t, "", fx.a) == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("the revoked certificate is still admitted:\n%s", fx.p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := fx.p.check(t, "", fx.a); code != http.StatusForbidden {
		t.Fatalf("the revoked certificate got %d, want 403", code)
	}
	// The two revocations rewrote the CRL twice; a poll may have seen only the first,
	// so b (never presented before it was revoked) is refused by the next poll at most.
	for fx.p.check(t, "", fx.b) == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("a revoked certificate never seen before is still admitted:\n%s", fx.p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := fx.p.check(t, "", fx.b); code != http.StatusForbidden {
		t.Fatalf("a revoked certificate never seen before got %d, want 403", code)
	}
	if code := fx.p.check(t, "", fx.c); code != http.StatusOK {
		t.Fatalf("a certificate not revoked got %d", code)
	}
	if !strings.Contains(fx.p.logs.String(), `"msg":"reloaded","what":"client_certs"`) {
		t.Fatalf("the reload was not logged:\n%s", fx.p.logs)
	}
}

// TestRevocationReachesServeBySIGHUP: with a poll interval of an hour, SIGHUP alone
// puts a revocation in force; a broken CRL afterwards keeps the last good one (the
// revoked certificates stay refused), counted in keygate_tls_reload_failures_total.
func TestRevocationReachesServeBySIGHUP(t *testing.T) {
	fx := newRevocationFixture(t, "1h")
	if code := fx.p.check(t, "", fx.a); code != http.StatusOK {
		t.Fatalf("a billing certificate got %d before the revoke", code)
	}
	fx.revoke(t)
	if code := fx.p.check(t, "", fx.a); code != http.StatusOK {
		t.Fatalf("got %d before any reload: the test does not show what SIGHUP does", code)
	}
	if got := fx.p.hup(t, 1); !strings.Contains(got, `"what":"client_certs"`) {
		t.Fatalf("SIGHUP did not reload client_certs:\n%s", got)
	}
	for name, tc := range map[string]struct {
		cert []byte
		want int
	}{"revoked, seen before": {fx.a, 403}, "revoked, never seen": {fx.b, 403}, "not revoked": {fx.c, 200}} {
		if code := fx.p.check(t, "", tc.cert); code != tc.want {
			t.Errorf("%s: %d, want %d", name, code, tc.want)
		}
	}
	rewrite(t, filepath.Join(fx.caDir, "crl.pem"), "-----BEGIN X509 CRL-----\nbroken\n-----END X509 CRL-----\n")
	if got := fx.p.hup(t, 2); !strings.Contains(got, "reload failed; keeping the old state") {
		t.Fatalf("a broken CRL:\n%s", got)
	}
	rewrite(t, filepath.Join(fx.caDir, "crl.pem"), "")
	fx.p.hup(t, 3)
	if code := fx.p.check(t, "", fx.a); code != http.StatusForbidden {
		t.Fatalf("after broken CRLs the revoked certificate got %d", code)
	}
	if code := fx.p.check(t, "", fx.c); code != http.StatusOK {
		t.Fatalf("after broken CRLs a good certificate got %d", code)
	}
	m := scrape(t, "http://"+fx.p.httpAddr+"/metrics")
	if v, _ := sum(m, "keygate_tls_reload_failures_total", `listener="client_certs"`); v != 2 {
		t.Errorf("keygate_tls_reload_failures_total{listener=client_certs} = %v, want 2", v)
	}
	if !fx.p.serving() {
		t.Fatal("not serving")
	}
}

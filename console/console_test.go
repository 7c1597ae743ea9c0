package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/certtest"
	"github.com/keygate/keygate/internal/safebuf"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

var shared vaulttest.Shared

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

const robotSPIFFE = "spiffe://example.org/ns/ops/sa/console"

// fixture is an admin listener as serve builds it (TLS, optional client certificates,
// the console in front of the admin API) over a real Vault, with a clock the test moves.
type fixture struct {
	url     string
	format  authz.Format
	store   *vaultstore.Store
	audit   *safebuf.Buffer
	ca      *certtest.CA
	roots   *x509.CertPool
	console *Console

	mu  sync.Mutex
	now time.Time
}

func (fx *fixture) clock() time.Time {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.now
}

func (fx *fixture) advance(d time.Duration) {
	fx.mu.Lock()
	fx.now = fx.now.Add(d)
	fx.mu.Unlock()
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith is newFixture with serve's cache in front of the store when cache is
// not nil: its per-client budget of unknown keys and its spray detection.
func newFixtureWith(t *testing.T, cache *vaultstore.CacheConfig) *fixture {
	t.Helper()
	v := shared.Get(t)
	store, err := vaultstore.New(vaultstore.Config{Client: v.Client(t, nil), Path: vaulttest.UniquePath(t)})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat("mgx-sk-")
	fx := &fixture{format: f, store: store, audit: &safebuf.Buffer{}, now: time.Now()}
	var lookup authz.KeyLookup = store
	if cache != nil {
		cache.Now = fx.clock
		c, err := vaultstore.NewCache(store, *cache)
		if err != nil {
			t.Fatal(err)
		}
		lookup = c
	}
	engine, err := authz.New(authz.Config{Format: f, Lookup: lookup, Now: fx.clock, IdentityRules: []authz.IdentityRule{
		{Name: "console-robot", SPIFFE: robotSPIFFE, Scopes: []string{admin.ScopeAdmin}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	fx.ca = certtest.NewCA(t, "clients")
	verifier, err := certs.NewVerifier(fx.ca.CertPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	peerOf := admin.PeerFrom(func() *certs.Verifier { return verifier })
	log := audit.New(fx.audit)
	fx.console = New(Config{Engine: engine, Store: store, Audit: log, PeerOf: peerOf, Now: fx.clock, MaxPerCaller: 2})
	api := admin.New(admin.Config{Engine: engine, Store: store, Format: f, Audit: log, PeerOf: peerOf, Now: fx.clock,
		Session: fx.console.Resolve})
	srv := httptest.NewUnstartedServer(fx.console.Handler(api))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fx.url = srv.URL
	fx.roots = x509.NewCertPool()
	fx.roots.AddCert(srv.Certificate())
	return fx
}

func (fx *fixture) mk(t *testing.T, spec authz.KeySpec) (string, authz.Record) {
	t.Helper()
	key, rec, err := fx.format.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key, rec
}

// browser is a client that keeps no cookie jar: the test sends the cookie itself.
func (fx *fixture) browser(leaf *certtest.Leaf) *http.Client {
	cfg := &tls.Config{RootCAs: fx.roots}
	if leaf != nil {
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) code() string {
	var b struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal([]byte(a.body), &b)
	return b.Error.Code
}

func (fx *fixture) do(t *testing.T, c *http.Client, method, path, body string, h map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, fx.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(raw)}
}

// signIn signs in with body and returns the session cookie's value and CSRF token.
func (fx *fixture) signIn(t *testing.T, c *http.Client, body string) (string, string) {
	t.Helper()
	a := fx.do(t, c, "POST", "/console/session", body, map[string]string{"Content-Type": "application/json",
		"Origin": fx.url, "Sec-Fetch-Site": "same-origin"})
	if a.status != http.StatusCreated {
		t.Fatalf("sign-in: %d %s", a.status, a.body)
	}
	var s Session
	if err := json.Unmarshal([]byte(a.body), &s); err != nil {
		t.Fatal(err)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == "__Host-keygate-console" {
			cookie = c
		}
	}
	if cookie == nil || !cookie.HttpOnly || !cookie.Secure || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Fatalf("the session cookie: %+v", a.header.Values("Set-Cookie"))
	}
	if strings.Contains(a.body, "mgx-sk-") {
		t.Fatal("the sign-in answer holds a key")
	}
	return cookie.Value, s.CSRFToken
}

func sessionHeaders(fx *fixture, cookie, csrf string) map[string]string {
	return map[string]string{"Cookie": "__Host-keygate-console=" + cookie, "X-CSRF-Token": csrf,
		"Origin": fx.url, "Sec-Fetch-Site": "same-origin"}
}

// TestSessionFollowsTheCaller: a session works only with its CSRF token, and ends at
// once when its key is revoked, loses its scope, or the session idles or ages out.
func TestSessionFollowsTheCaller(t *testing.T) {
	fx := newFixture(t)
	c := fx.browser(nil)
	key, rec := fx.mk(t, authz.KeySpec{Name: "ops", Owner: "acct_ops", Scopes: []string{admin.ScopeAdmin}})
	cookie, csrf := fx.signIn(t, c, `{"key":"`+key+`"}`)
	h := sessionHeaders(fx, cookie, csrf)
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 200 {
		t.Fatalf("with the session: %d %s", a.status, a.body)
	}
	for name, drop := range map[string]string{"no token": "X-CSRF-Token"} {
		hh := map[string]string{}
		for k, v := range h {
			if k != drop {
				hh[k] = v
			}
		}
		if a := fx.do(t, c, "GET", "/api-keys", "", hh); a.status != 403 || a.code() != "CSRF_REJECTED" {
			t.Errorf("%s: %d %s", name, a.status, a.body)
		}
	}
	// The audit line names the caller's key, as for a key header.
	if !strings.Contains(fx.audit.String(), `"actor":"`+rec.ID+`"`) || !strings.Contains(fx.audit.String(), `"via":"console"`) {
		t.Errorf("audit: %s", fx.audit.String())
	}

	// Losing the admin scope ends the session at once.
	if _, _, err := fx.store.SetScopes(context.Background(), rec.ID, []string{"chat"}); err != nil {
		t.Fatal(err)
	}
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 401 || a.code() != "SESSION_ENDED" {
		t.Fatalf("after the scope change: %d %s", a.status, a.body)
	}
	// ... and for good: the scope coming back does not bring the session back.
	if _, _, err := fx.store.SetScopes(context.Background(), rec.ID, []string{admin.ScopeAdmin}); err != nil {
		t.Fatal(err)
	}
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 401 {
		t.Fatalf("an ended session came back: %d %s", a.status, a.body)
	}

	// Revocation.
	cookie, csrf = fx.signIn(t, c, `{"key":"`+key+`"}`)
	h = sessionHeaders(fx, cookie, csrf)
	if _, err := fx.store.Revoke(context.Background(), rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if a := fx.do(t, c, "GET", "/console/session", "", h); a.status != 401 {
		t.Fatalf("whoami after the revoke: %d %s", a.status, a.body)
	}

	// Idle and absolute expiry, with the engine's and the console's clock.
	key2, _ := fx.mk(t, authz.KeySpec{Name: "ops2", Owner: "acct_ops", Scopes: []string{admin.ScopeAdmin}})
	cookie, csrf = fx.signIn(t, c, `{"key":"`+key2+`"}`)
	h = sessionHeaders(fx, cookie, csrf)
	for range 40 { // 40 × 14 min > 8 h, each within the idle timeout
		if a := fx.do(t, c, "GET", "/console/session", "", h); a.status != 200 {
			break
		}
		fx.advance(14 * time.Minute)
	}
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 401 {
		t.Fatalf("a session kept busy for more than 8 hours: %d %s", a.status, a.body)
	}
	cookie, csrf = fx.signIn(t, c, `{"key":"`+key2+`"}`)
	h = sessionHeaders(fx, cookie, csrf)
	fx.advance(16 * time.Minute)
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 401 {
		t.Fatalf("an idle session: %d %s", a.status, a.body)
	}

	// Sign-out needs the token, then deletes the session.
	cookie, csrf = fx.signIn(t, c, `{"key":"`+key2+`"}`)
	h = sessionHeaders(fx, cookie, csrf)
	if a := fx.do(t, c, "DELETE", "/console/session", "", map[string]string{"Cookie": h["Cookie"]}); a.status != 403 {
		t.Fatalf("sign-out without the token: %d", a.status)
	}
	if a := fx.do(t, c, "DELETE", "/console/session", "", h); a.status != 204 {
		t.Fatalf("sign-out: %d", a.status)
	}
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 401 {
		t.Fatalf("after the sign-out: %d %s", a.status, a.body)
	}
	// Per caller, the oldest session goes (MaxPerCaller 2 here).
	c1, t1 := fx.signIn(t, c, `{"key":"`+key2+`"}`)
	fx.signIn(t, c, `{"key":"`+key2+`"}`)
	fx.signIn(t, c, `{"key":"`+key2+`"}`)
	if a := fx.do(t, c, "GET", "/api-keys", "", sessionHeaders(fx, c1, t1)); a.status != 401 {
		t.Fatalf("a caller's oldest session beyond the cap: %d", a.status)
	}
	if strings.Contains(fx.audit.String(), key) || strings.Contains(fx.audit.String(), key2) {
		t.Fatal("a key in the audit log")
	}
}

// TestSignInInputs tries the sign-in with what an attacker can send.
func TestSignInInputs(t *testing.T) {
	fx := newFixture(t)
	c := fx.browser(nil)
	key, _ := fx.mk(t, authz.KeySpec{Name: "ops", Owner: "acct_ops", Scopes: []string{admin.ScopeAdmin}})
	plain, _ := fx.mk(t, authz.KeySpec{Name: "app", Owner: "acct_a", Scopes: []string{"chat"}})
	json := map[string]string{"Content-Type": "application/json"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{"Content-Type": "application/json"}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	for name, tc := range map[string]struct {
		body   string
		h      map[string]string
		status int
	}{
		"a wrong key":          {`{"key":"mgx-sk-` + strings.Repeat("A", 32) + `"}`, json, 401},
		"no key":               {`{"key":""}`, json, 400},
		"not JSON":             {`key=` + key, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		"text/plain":           {`{"key":"` + key + `"}`, map[string]string{"Content-Type": "text/plain"}, 415},
		"no content type":      {`{"key":"` + key + `"}`, nil, 415},
		"an unknown field":     {`{"key":"` + key + `","admin":true}`, json, 400},
		"two values":           {`{"key":"` + key + `"} {"key":"x"}`, json, 400},
		"oversize":             {`{"key":"` + strings.Repeat("a", 9<<10) + `"}`, json, 400},
		"a key without scope":  {`{"key":"` + plain + `"}`, json, 403},
		"another origin":       {`{"key":"` + key + `"}`, with(map[string]string{"Origin": "https://evil.example"}), 403},
		"a cross-site request": {`{"key":"` + key + `"}`, with(map[string]string{"Sec-Fetch-Site": "cross-site"}), 403},
		"no certificate":       {`{"certificate":true}`, json, 401},
		"the key twice":        {`{"key":"` + key + `","key":"` + plain + `"}`, json, 403},
	} {
		t.Run(name, func(t *testing.T) {
			a := fx.do(t, c, "POST", "/console/session", tc.body, tc.h)
			if a.status != tc.status {
				t.Fatalf("%d %s, want %d", a.status, a.body, tc.status)
			}
			if a.header.Get("Set-Cookie") != "" {
				t.Fatal("a refused sign-in set a cookie")
			}
			if a.header.Get("Content-Security-Policy") != CSP {
				t.Fatal("no CSP on the answer")
			}
		})
	}
	// A cookie that is no session, or two cookies, are no session: the API answers as
	// without one.
	for _, cookie := range []string{"__Host-keygate-console=" + strings.Repeat("A", 43),
		"__Host-keygate-console=x; __Host-keygate-console=y", "keygate-console=" + token()} {
		a := fx.do(t, c, "GET", "/api-keys", "", map[string]string{"Cookie": cookie, "X-CSRF-Token": strings.Repeat("A", 43)})
		if a.status != 401 || a.code() == "CSRF_REJECTED" {
			t.Errorf("cookie %q: %d %s", cookie, a.status, a.body)
		}
	}
}

// TestCertificateSession: on an mTLS listener, a certificate an identity rule admits
// signs in; the session ends when the connection no longer has that certificate.
func TestCertificateSession(t *testing.T) {
	fx := newFixture(t)
	robot := fx.ca.Issue(t, certtest.LeafOptions{URIs: []string{robotSPIFFE}})
	other := fx.ca.Issue(t, certtest.LeafOptions{URIs: []string{"spiffe://example.org/ns/ops/sa/other"}})
	c := fx.browser(robot)
	cookie, csrf := fx.signIn(t, c, `{"certificate":true}`)
	h := sessionHeaders(fx, cookie, csrf)
	if a := fx.do(t, c, "GET", "/console/session", "", h); a.status != 200 || !strings.Contains(a.body, `"key_id":"cert:console-robot"`) {
		t.Fatalf("whoami: %d %s", a.status, a.body)
	}
	if a := fx.do(t, c, "GET", "/api-keys", "", h); a.status != 200 {
		t.Fatalf("with the certificate's session: %d %s", a.status, a.body)
	}
	// The same cookie over a connection with another certificate, or none.
	for name, client := range map[string]*http.Client{"another certificate": fx.browser(other), "no certificate": fx.browser(nil)} {
		cookie, csrf := fx.signIn(t, c, `{"certificate":true}`)
		if a := fx.do(t, client, "GET", "/api-keys", "", sessionHeaders(fx, cookie, csrf)); a.status != 401 || a.code() != "SESSION_ENDED" {
			t.Errorf("%s: %d %s", name, a.status, a.body)
		}
	}
	// Without a cookie, the certificate alone still works as before, from a CLI; from a
	// page elsewhere it does not.
	if a := fx.do(t, c, "GET", "/api-keys", "", nil); a.status != 200 {
		t.Errorf("the certificate alone: %d %s", a.status, a.body)
	}
	if a := fx.do(t, c, "POST", "/api-keys", `{"name":"x","owner":"acct_x","scopes":["admin"]}`,
		map[string]string{"Origin": "https://evil.example"}); a.status != 403 || a.code() != "CSRF_REJECTED" {
		t.Errorf("the certificate from another origin: %d %s", a.status, a.body)
	}
}

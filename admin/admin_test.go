package admin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

type fixture struct {
	url                          string
	format                       authz.Format
	store                        *vaultstore.Store
	usage                        *vaultstore.Usage
	engine                       *authz.Engine
	audit                        *safebuf.Buffer
	log                          *audit.Log // writes to audit, keeps recent events
	admin, owner, plain, otherB  string     // keys
	adminRec, plainRec, otherRec authz.Record
	keys                         []string // every key made, for the audit scan
	ca                           *certtest.CA
	client                       *http.Client // trusts the server, presents no certificate

	mu          sync.Mutex
	vaultCalls  []string // the store's Vault requests, method and path
	serverCerts *x509.CertPool
}

// certRule admits a client certificate with this SPIFFE ID as an api-keys caller.
const certRuleSPIFFE = "spiffe://example.org/ns/ops/sa/keys"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	v := shared.Get(t)
	fx := &fixture{audit: &safebuf.Buffer{}}
	store, err := vaultstore.New(vaultstore.Config{Client: v.Client(t, func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			fx.mu.Lock()
			fx.vaultCalls = append(fx.vaultCalls, r.Method+" "+r.URL.Path)
			fx.mu.Unlock()
			return next.RoundTrip(r)
		})
	}), Path: vaulttest.UniquePath(t)})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat("mgx-sk-")
	// A strict policy (a route, unmatched requests denied): the admin API authorizes by
	// scope and must work whatever the policy says.
	deny := true
	engine, err := authz.New(authz.Config{Format: f, Lookup: store, IdentityRules: []authz.IdentityRule{
		{Name: "key-robot", SPIFFE: certRuleSPIFFE, Scopes: []string{ScopeAPIKeys, "chat:*"}},
	}, Policy: authz.Policy{Routes: []authz.Route{{Name: "chat", Path: "/v1/chat/completions", Scope: "chat:completions"}},
		DenyUnmatched: &deny}})
	if err != nil {
		t.Fatal(err)
	}
	fx.format, fx.store, fx.engine, fx.usage = f, store, engine, store.NewUsage()
	fx.admin, fx.adminRec = fx.mk(t, authz.KeySpec{Name: "ops", Owner: "acct_ops", Scopes: []string{ScopeAdmin}})
	fx.owner, _ = fx.mk(t, authz.KeySpec{Name: "self-service", Owner: "acct_a", Scopes: []string{ScopeAPIKeys, "chat:completions"}})
	fx.plain, fx.plainRec = fx.mk(t, authz.KeySpec{Name: "app", Owner: "acct_a", Scopes: []string{"chat:completions"}})
	fx.otherB, fx.otherRec = fx.mk(t, authz.KeySpec{Name: "b app", Owner: "acct_b", Scopes: []string{"chat:completions"}})

	// The listener's mTLS, as keygate serve sets it up: client certificates optional,
	// verified by a certs.Verifier.
	fx.ca = certtest.NewCA(t, "clients")
	verifier, err := certs.NewVerifier(fx.ca.CertPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	peerOf := PeerFrom(func() *certs.Verifier { return verifier })
	fx.log = audit.New(fx.audit, audit.WithRecent(1000))
	srv := httptest.NewUnstartedServer(New(Config{Engine: engine, Store: store, Format: f, Audit: fx.log,
		PeerOf: peerOf, Usage: fx.usage}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fx.url, fx.client = srv.URL, srv.Client()
	fx.serverCerts = x509.NewCertPool()
	fx.serverCerts.AddCert(srv.Certificate())
	return fx
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// mk stores a new key for spec and returns it with its record.
func (fx *fixture) mk(t *testing.T, spec authz.KeySpec) (string, authz.Record) {
	t.Helper()
	key, rec, err := fx.format.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	fx.keys = append(fx.keys, key)
	return key, rec
}

// clientWith returns a client that presents leaf.
func (fx *fixture) clientWith(leaf *certtest.Leaf) *http.Client {
	cert := tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: fx.serverCerts,
		Certificates: []tls.Certificate{cert}}}}
}

// call sends one request with the key as a Bearer token and decodes the JSON answer.
func (fx *fixture) call(t *testing.T, key, method, path, body string) (int, http.Header, map[string]any, string) {
	t.Helper()
	return fx.callWith(t, fx.client, key, method, path, body, nil)
}

// callWith is call through a given client, with extra request headers.
func (fx *fixture) callWith(t *testing.T, client *http.Client, key, method, path, body string, h http.Header) (int, http.Header, map[string]any, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, fx.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, resp.Header, m, string(raw)
}

func (fx *fixture) remember(key any) {
	if k, ok := key.(string); ok {
		fx.keys = append(fx.keys, k)
	}
}

func TestRefusedCallers(t *testing.T) {
	fx := newFixture(t)
	for name, tc := range map[string]struct {
		key    string
		status int
		body   string
	}{
		"no key":        {"", 401, `{"success":false,"error":{"code":"AUTH_MISSING","message":"Authorization header required","status":401}}`},
		"invalid key":   {fx.admin[:len(fx.admin)-2] + "zz", 401, `{"success":false,"error":{"code":"AUTH_KEY_INVALID","message":"API key is invalid, expired, or revoked","status":401}}`},
		"without scope": {fx.plain, 403, `{"success":false,"error":{"code":"AUTH_INSUFFICIENT_SCOPE","message":"Operation requires 'admin' scope","status":403,"details":{"required_scope":"admin","current_scopes":["chat:completions"]}}}`},
	} {
		t.Run(name, func(t *testing.T) {
			status, _, _, raw := fx.call(t, tc.key, "GET", "/api-keys", "")
			if status != tc.status || raw != tc.body {
				t.Fatalf("%d %s\nwant %d %s", status, raw, tc.status, tc.body)
			}
		})
	}
}

func TestAdminCaller(t *testing.T) {
	fx := newFixture(t)
	status, _, _, raw := fx.call(t, fx.admin, "GET", "/api-keys", "")
	var list []View
	if err := json.Unmarshal([]byte(raw), &list); status != 200 || err != nil || len(list) != 4 {
		t.Fatalf("list: %d %s", status, raw)
	}

	status, h, m, raw := fx.call(t, fx.admin, "POST", "/api-keys", `{"name":"Production App","owner":"acct_b","scopes":["models:read"],"expires_in":"90d"}`)
	if status != 201 || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("create: %d %s", status, raw)
	}
	fx.remember(m["key"])
	id, _ := m["id"].(string)
	if d, _ := fx.engine.Authenticate(context.Background(), &authz.Request{APIKey: m["key"].(string)}); !d.Allowed() || d.Record.Owner != "acct_b" {
		t.Fatalf("the created key is not accepted: %v", d.Reason)
	}
	if status, _, _, raw := fx.call(t, fx.admin, "POST", "/api-keys", `{"name":"Production App","owner":"acct_b"}`); status != 409 || !strings.Contains(raw, "NAME_TAKEN") {
		t.Fatalf("duplicate name: %d %s", status, raw)
	}

	status, _, m, raw = fx.call(t, fx.admin, "POST", "/api-keys/"+id+"/rotate", `{"grace":"1h"}`)
	if status != 201 || m["key"] == nil || m["old"].(map[string]any)["status"] != "rotating" {
		t.Fatalf("rotate: %d %s", status, raw)
	}
	fx.remember(m["key"])
	newID := m["id"].(string)

	status, _, m, raw = fx.call(t, fx.admin, "PATCH", "/api-keys/"+newID, `{"scopes":["models:read","image:generate"]}`)
	if status != 200 || strings.Join(toStrings(m["scopes"]), ",") != "image:generate,models:read" {
		t.Fatalf("scopes: %d %s", status, raw)
	}
	status, _, m, raw = fx.call(t, fx.admin, "DELETE", "/api-keys/"+newID, "")
	if status != 200 || m["status"] != "revoked" {
		t.Fatalf("revoke: %d %s", status, raw)
	}
	if status, _, _, raw := fx.call(t, fx.admin, "GET", "/api-keys/key_0000000000000000", ""); status != 404 || !strings.Contains(raw, "KEY_NOT_FOUND") {
		t.Fatalf("unknown id: %d %s", status, raw)
	}
	for name, body := range map[string]string{
		"not json":      `{`,
		"unknown field": `{"name":"x","colour":"red"}`,
		"bad expiry":    `{"name":"x","expires_in":"soon"}`,
		"bad scope":     `{"name":"x","scopes":["a b"]}`,
	} {
		if status, _, _, raw := fx.call(t, fx.admin, "POST", "/api-keys", body); status != 400 || !strings.Contains(raw, "INVALID_REQUEST") {
			t.Errorf("%s: %d %s", name, status, raw)
		}
	}
	fx.checkAudit(t, audit.KeyCreated, audit.KeyRotated, audit.KeyScopesChanged, audit.KeyRevoked, audit.AdminCall)
}

func TestOwnerScopedCaller(t *testing.T) {
	fx := newFixture(t)
	status, _, _, raw := fx.call(t, fx.owner, "GET", "/api-keys", "")
	var list []View
	if err := json.Unmarshal([]byte(raw), &list); status != 200 || err != nil {
		t.Fatalf("list: %d %s", status, raw)
	}
	for _, v := range list {
		if v.Owner != "acct_a" {
			t.Fatalf("an acct_a caller sees %s of %s", v.ID, v.Owner)
		}
	}
	if len(list) != 2 {
		t.Fatalf("acct_a caller sees %d keys, want its 2", len(list))
	}
	for name, tc := range map[string]struct {
		method, path, body string
		status             int
	}{
		"another owner's key":        {"GET", "/api-keys/" + fx.otherRec.ID, "", 404},
		"rotate another owner's key": {"POST", "/api-keys/" + fx.otherRec.ID + "/rotate", "", 404},
		"revoke another owner's key": {"DELETE", "/api-keys/" + fx.otherRec.ID, "", 404},
		"create for another owner":   {"POST", "/api-keys", `{"name":"x","owner":"acct_b"}`, 403},
		"grant admin":                {"POST", "/api-keys", `{"name":"x","scopes":["admin"]}`, 403},
		"grant a scope it lacks":     {"POST", "/api-keys", `{"name":"x","scopes":["image:generate"]}`, 403},
		"change scopes":              {"PATCH", "/api-keys/" + fx.otherRec.ID, `{"scopes":["admin"]}`, 403},
	} {
		t.Run(name, func(t *testing.T) {
			if status, _, _, raw := fx.call(t, fx.owner, tc.method, tc.path, tc.body); status != tc.status {
				t.Fatalf("%d %s, want %d", status, raw, tc.status)
			}
		})
	}
	if got, _ := fx.store.Get(context.Background(), fx.otherRec.ID); !got.RevokedAt.IsZero() || got.ReplacedBy != "" {
		t.Fatal("an acct_a caller changed an acct_b key")
	}
	status, _, m, raw := fx.call(t, fx.owner, "POST", "/api-keys", `{"name":"ci","scopes":["chat:completions"]}`)
	if status != 201 || m["owner"] != "acct_a" {
		t.Fatalf("create own key: %d %s", status, raw)
	}
	fx.remember(m["key"])
	id := m["id"].(string)
	if status, _, m, raw := fx.call(t, fx.owner, "POST", "/api-keys/"+id+"/rotate", `{"grace":"0"}`); status != 201 || m["old"].(map[string]any)["status"] != "revoked" {
		t.Fatalf("rotate own key with grace 0: %d %s", status, raw)
	} else {
		fx.remember(m["key"])
	}
	fx.checkAudit(t, audit.KeyCreated, audit.KeyRotated, audit.AdminCall)
}

// checkAudit asserts that each event kind was logged and that no key is in the log.
func (fx *fixture) checkAudit(t *testing.T, kinds ...string) {
	t.Helper()
	log := fx.audit.String()
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		seen[e.Event] = true
		if e.Event == audit.AdminCall && (e.Status == 0 || e.Details["path"] == nil) {
			t.Fatalf("admin call without status or path: %s", line)
		}
	}
	for _, k := range kinds {
		if !seen[k] {
			t.Errorf("no %s event in the audit log:\n%s", k, log)
		}
	}
	for _, key := range fx.keys {
		if strings.Contains(log, key) || strings.Contains(log, key[7:33]) {
			t.Fatal("the audit log holds key material")
		}
	}
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestUnusedFor: GET /api-keys?unused_for= lists live keys not used for that long (a key
// never used counts from its creation), within the caller's owner, as `keys list
// --unused-for` does.
func TestUnusedFor(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	old := time.Now().Add(-60 * 24 * time.Hour)
	mkAt := func(spec authz.KeySpec, at time.Time) authz.Record {
		key, rec, err := fx.format.Issue(spec, at)
		if err != nil {
			t.Fatal(err)
		}
		if err := fx.store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		fx.keys = append(fx.keys, key)
		return rec
	}
	mkAt(authz.KeySpec{Name: "idle a", Owner: "acct_a", Scopes: []string{"chat:completions"}}, old)
	usedA := mkAt(authz.KeySpec{Name: "used a", Owner: "acct_a", Scopes: []string{"chat:completions"}}, old)
	usedLongAgoA := mkAt(authz.KeySpec{Name: "used long ago a", Owner: "acct_a", Scopes: []string{"chat:completions"}}, old)
	revokedA := mkAt(authz.KeySpec{Name: "revoked a", Owner: "acct_a", Scopes: []string{"chat:completions"}}, old)
	mkAt(authz.KeySpec{Name: "idle b", Owner: "acct_b", Scopes: []string{"chat:completions"}}, old)
	if _, err := fx.store.Revoke(ctx, revokedA.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	fx.usage.Seen(usedA.ID, time.Now().Add(-time.Hour))
	fx.usage.Seen(usedLongAgoA.ID, time.Now().Add(-45*24*time.Hour))
	if err := fx.usage.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	ids := func(key, q string) string {
		status, _, _, raw := fx.call(t, key, "GET", "/api-keys?"+q, "")
		var list []View
		if err := json.Unmarshal([]byte(raw), &list); status != 200 || err != nil {
			t.Fatalf("?%s: %d %s", q, status, raw)
		}
		var out []string
		for _, v := range list {
			out = append(out, v.Name)
		}
		slices.Sort(out)
		return strings.Join(out, ",")
	}
	for _, tc := range []struct{ key, q, want string }{
		{fx.owner, "unused_for=30d", "idle a,used long ago a"},
		{fx.owner, "unused_for=50d", "idle a"},
		{fx.owner, "unused_for=1000h", "idle a,used long ago a"},
		{fx.owner, "unused_for=61d", ""},
		{fx.owner, "unused_for=30m", "idle a,used a,used long ago a"}, // app and self-service are new
		{fx.admin, "unused_for=30d", "idle a,idle b,used long ago a"},
	} {
		if got := ids(tc.key, tc.q); got != tc.want {
			t.Errorf("%s ?%s: %q, want %q", tc.key[:10], tc.q, got, tc.want)
		}
	}
	for _, q := range []string{"unused_for=", "unused_for=30days", "unused_for=0", "unused_for=0d", "unused_for=-1h",
		"unused_for=99999999d", "unused_for=30d&unused_for=1d", "unused_for=" + fx.admin} {
		status, _, _, raw := fx.call(t, fx.owner, "GET", "/api-keys?"+q, "")
		if status != 400 || !strings.Contains(raw, "INVALID_REQUEST") || !strings.Contains(raw, "unused_for") || strings.Contains(raw, fx.admin[7:33]) {
			t.Errorf("?%.40s: %d %s", q, status, raw)
		}
	}
	if _, _, _, raw := fx.call(t, fx.owner, "GET", "/api-keys?unused_for=30days", ""); !strings.Contains(raw, `invalid duration \"30days\": use 90d or 1h30m`) {
		t.Errorf("the duration message: %s", raw)
	}
}

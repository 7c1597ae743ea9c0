package envoy

import (
	"context"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
)

// attackServer serves policy over real gRPC, with a Vault-backed keyset, and returns a
// key holding scopes besides the keyset's own keys.
func attackServer(t *testing.T, policy authz.Policy, scopes ...string) (authv3.AuthorizationClient, *keyset, string) {
	t.Helper()
	ks := newKeyset(t)
	f, _ := authz.NewFormat(prefix)
	e, err := authz.New(authz.Config{Format: f, Lookup: ks.store, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	key, rec, err := f.Issue(authz.KeySpec{Name: "attacker", Owner: "acct_42", Scopes: scopes}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return serve(t, newServer(t, e, Options{})), ks, key
}

// at sets the request line and host as Envoy sends them.
func at(req *authv3.CheckRequest, method, host, path string) *authv3.CheckRequest {
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Method, h.Host, h.Path = method, host, path
	h.Headers[":method"], h.Headers[":authority"], h.Headers[":path"] = method, host, path
	return req
}

// TestNFKCDotSegmentOverGRPC: Envoy (normalize_path, merge_slashes, escaped slashes
// rejected) forwards /v1/admin/%E2%80%A5/models as it is, and a Go ServeMux upstream
// routes it to its /v1/admin/ subtree; keygate reads the "‥" as "..", matches the
// request to /v1/models and lets a models:read key in.
func TestNFKCDotSegmentOverGRPC(t *testing.T) {
	client, ks, _ := attackServer(t, authz.Policy{Routes: []authz.Route{
		{Name: "admin", Prefix: "/v1/admin", Scope: "admin"},
		{Name: "models", Methods: []string{"GET"}, Prefix: "/v1/models", Scope: "models:read"},
	}})
	for _, path := range []string{
		"/v1/admin",
		"/v1/admin/%E2%80%A5/models",
		"/v1/admin/%EF%BC%8E%EF%BC%8E/models",
		"/v1/admin/%EF%B8%B0/models",
	} {
		req := at(envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active}), "GET", "api.example.com", path)
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			t.Errorf("GET %s allowed with models:read; the upstream serves it from /v1/admin/", path)
		}
	}
}

// TestMethodOverrideVariantsOverGRPC: each request is a POST keygate judges as POST and
// a common upstream runs as DELETE, on a route a "write" key may POST to but not DELETE.
func TestMethodOverrideVariantsOverGRPC(t *testing.T) {
	client, _, writer := attackServer(t, authz.Policy{Routes: []authz.Route{
		{Name: "files", Prefix: "/v1/files", Scope: "files:admin"},
	}}, authz.ScopeWrite)
	check := func(method, path string, headers map[string]string, body string) bool {
		headers["authorization"] = "Bearer " + writer
		req := at(envoyRequest(t, headers), method, "api.example.com", path)
		req.GetAttributes().GetRequest().GetHttp().Body = body
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetOkResponse() != nil
	}
	if check("DELETE", "/v1/files/f1", map[string]string{}, "") {
		t.Fatal("write may DELETE")
	}
	if check("POST", "/v1/files/f1", map[string]string{"x-http-method-override": "DELETE"}, "") {
		t.Fatal("the override header is not judged")
	}
	for name, tc := range map[string]struct {
		path    string
		headers map[string]string
		body    string
	}{
		// An Envoy without headers_with_underscores_action: REJECT_REQUEST passes this;
		// Rack (Puma), WSGI and PHP read it as X-HTTP-Method-Override.
		"underscore override header": {"/v1/files/f1", map[string]string{"x_http_method_override": "DELETE"}, ""},
		// Rack::MethodOverride (Rails), Laravel and Symfony read _method from a form body.
		"form body _method": {"/v1/files/f1", map[string]string{"content-type": "application/x-www-form-urlencoded"}, "_method=DELETE"},
		// PHP keeps the last of repeated names.
		"repeated _method": {"/v1/files/f1?_method=POST&_method=DELETE", map[string]string{}, ""},
		"PHP '.' as '_'":   {"/v1/files/f1?.method=DELETE", map[string]string{}, ""},
	} {
		if check("POST", tc.path, tc.headers, tc.body) {
			t.Errorf("%s: allowed; the upstream runs it as DELETE", name)
		}
	}
}

// TestForwardedHostOverGRPC: keygate matches host routes on :authority, but Rails reads
// request.host from X-Forwarded-Host whenever it is present (and Express, Django,
// Spring do behind a trusted proxy), and Envoy passes the client's X-Forwarded-Host on.
// A host route is then skipped for a request the upstream routes to that host.
func TestForwardedHostOverGRPC(t *testing.T) {
	client, ks, _ := attackServer(t, authz.Policy{Routes: []authz.Route{
		{Name: "admin-host", Host: "admin.example.com", Scope: "admin"},
		{Name: "rest", Prefix: "/", Scope: "models:read"},
	}})
	for name, h := range map[string]map[string]string{
		"x-forwarded-host": {"x-forwarded-host": "admin.example.com"},
		"forwarded":        {"forwarded": "host=admin.example.com;proto=https"},
	} {
		h["authorization"] = "Bearer " + ks.active
		resp, err := client.Check(context.Background(), at(envoyRequest(t, h), "GET", "api.example.com", "/users"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetOkResponse() != nil {
			t.Errorf("%s: allowed with models:read; the upstream routes it to admin.example.com", name)
		}
	}
}

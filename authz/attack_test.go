package authz

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestCanonicalPathNFKCMakesNoDotSegments: NFKC turns "‥" (U+2025), "︰" (U+FE30) and
// "．．" (full-width full stops) into "..", and "․" (U+2024) into ".". No upstream
// applies NFKC, so Envoy forwards such a segment as a name and a Go ServeMux, Express or
// Spring routes it under the prefix it follows; keygate must not read it as a dot
// segment, which pops the prefix and matches the request against another route.
func TestCanonicalPathNFKCMakesNoDotSegments(t *testing.T) {
	for _, in := range []string{
		"/admin/‥/public",
		"/admin/%E2%80%A5/public",
		"/admin/︰/public",
		"/admin/%EF%B8%B0/public",
		"/admin/．．/public",
		"/admin/%EF%BC%8E%EF%BC%8E/public",
		"/admin/.%EF%BC%8E/public",
		"/admin/x/․/‥/‥/public",
	} {
		got, err := CanonicalPath(in)
		if err == nil && !strings.HasPrefix(got, "/admin/") {
			t.Errorf("CanonicalPath(%q) = %q: a segment NFKC made a dot segment took the request out of /admin", in, got)
		}
		if err != nil && !errors.Is(err, ErrAmbiguousRequest) {
			t.Errorf("CanonicalPath(%q): %v", in, err)
		}
	}
}

// TestMethodOverrideVariants: the _method parameter, as PHP frameworks (Laravel,
// Symfony) read it. PHP keeps the last of repeated names, and turns a '.' in a name
// into '_'. A key with the generic "write" permission may POST to
// a route but not DELETE; each request below is a DELETE to such an upstream.
func TestMethodOverrideVariants(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	e, err := New(Config{Format: fx.engine.format, Lookup: fx.lookup, Now: fx.engine.now, Policy: Policy{Routes: []Route{
		{Name: "files", Prefix: "/v1/files", Scope: "files:admin"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	fx.engine = e
	writer := fx.withScopes(t, ScopeWrite)
	if d, _ := e.Check(context.Background(), &Request{APIKey: writer, Method: "DELETE", Path: "/v1/files/f1"}); d.Allowed() {
		t.Fatal("write may DELETE")
	}
	for _, target := range []string{
		"/v1/files/f1?_method=POST&_method=DELETE", // PHP: the last one wins
		"/v1/files/f1?.method=DELETE",              // PHP: '.' in a name is '_'
		"/v1/files/f1?%2Emethod=DELETE",
		"/v1/files/f1?a=1&.method=DELETE",
	} {
		d, err := e.Check(context.Background(), &Request{APIKey: writer, Method: "POST", Path: target})
		if err != nil || d.Allowed() {
			t.Errorf("POST %s: %v %v; a PHP upstream runs it as DELETE", target, d.Reason, err)
		}
	}
}

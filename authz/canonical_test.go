package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/":                                 "/",
		"/v1/chat/completions":              "/v1/chat/completions",
		"/v1/chat/completions?x=1":          "/v1/chat/completions",
		"/v1/chat/completions/":             "/v1/chat/completions",
		"/v1/chat/completions//":            "/v1/chat/completions",
		"//v1/chat/completions":             "/v1/chat/completions",
		"/v1//chat///completions":           "/v1/chat/completions",
		"/v1/./chat/completions":            "/v1/chat/completions",
		"/v1/x/../chat/completions":         "/v1/chat/completions",
		"/v1/%2e/chat/completions":          "/v1/chat/completions",
		"/v1/x/%2E%2e/chat/completions":     "/v1/chat/completions",
		"/v1/x/.%2e/chat/completions":       "/v1/chat/completions",
		"/../../v1/chat/completions":        "/v1/chat/completions",
		"/v1/%63hat/completions":            "/v1/chat/completions",
		"/v1/%63%68%61%74/completions":      "/v1/chat/completions",
		"/V1/CHAT/COMPLETIONS":              "/V1/CHAT/COMPLETIONS", // case is kept; matching folds it
		"/v1/chat/completions;x=1":          "/v1/chat/completions",
		"/v1/chat;jsessionid=1/completions": "/v1/chat/completions",
		"/v1/chat%3Bx/completions":          "/v1/chat;x/completions", // an encoded ';' is part of the name
		"/v1/ｃhat/completions":              "/v1/chat/completions",   // full-width c, NFKC
		"/v1/%EF%BD%83hat/completions":      "/v1/chat/completions",   // the same, encoded
		"/v1/caf%C3%A9":                     "/v1/café",
		"/v1/a%20b":                         "/v1/a b",
		"/v1/a.b/c":                         "/v1/a.b/c",
		"/v1/.well-known/x":                 "/v1/.well-known/x",
		"/v1/models/*":                      "/v1/models/*",
		"/.":                                "/",
		"/..":                               "/",
		"/a/b/..":                           "/a",
	} {
		got, err := CanonicalPath(in)
		if err != nil || got != want {
			t.Errorf("CanonicalPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestCanonicalPathRefusesAmbiguity(t *testing.T) {
	for _, in := range []string{
		"",
		"v1/chat/completions",
		"*",
		"http://api.example.com/v1/chat/completions",
		"/v1/chat%2Fcompletions",
		"/v1/chat%2fcompletions",
		"/v1/chat%5Ccompletions",
		"/v1/chat%5ccompletions",
		"/v1\\chat\\completions",
		"/v1/chat%00/completions",
		"/v1/chat\x00/completions",
		"/v1/chat completions",
		"/v1/chat\tcompletions",
		"/v1/chat%0d%0a/completions",
		"/v1/chat%7F",
		"/v1/chat%",
		"/v1/chat%4",
		"/v1/chat%zz",
		"/v1/%252e%252e/admin",
		"/v1/%252F",
		"/v1/chat%ff",
		"/v1/\xff",
		"/v1/..;/admin",
		"/v1/.;x/admin",
		"/v1/;x/admin",
		"/v1/%2e%2e;x/admin",
		"/v1/chat#frag",
		"/v1/a／b", // full-width solidus becomes '/' under NFKC
		"/v1/a%EF%BC%8Fb",
		"/v1/a＼b",
		"/" + strings.Repeat("a", maxPath),
	} {
		got, err := CanonicalPath(in)
		if !errors.Is(err, ErrAmbiguousRequest) {
			t.Errorf("CanonicalPath(%q) = %q, %v; want an ambiguous-request error", in, got, err)
		}
	}
}

func TestCanonicalPathPlainDoesNotAllocate(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = CanonicalPath("/v1/chat/completions?stream=true") }); n != 0 {
		t.Fatalf("%v allocations for a canonical path", n)
	}
}

func TestNormalizeTarget(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/chat/completions":          "/v1/chat/completions",
		"/v1/%63hat/completions?a=%2F":  "/v1/chat/completions?a=%2F",
		"/v1/./x/../chat//completions/": "/v1/chat/completions/",
		"/v1/a%3bb":                     "/v1/a%3Bb",
		"/v1/chat;x=1":                  "/v1/chat;x=1",
		"/v1/caf%c3%a9":                 "/v1/caf%C3%A9",
		"//":                            "/",
	} {
		got, err := NormalizeTarget(in)
		if err != nil || got != want {
			t.Errorf("NormalizeTarget(%q) = %q, %v; want %q", in, got, err, want)
		}
		if c1, err1 := CanonicalPath(in); err1 == nil {
			if c2, err2 := CanonicalPath(got); err2 != nil || c2 != c1 {
				t.Errorf("NormalizeTarget(%q) = %q canonicalizes to %q, %v; the original to %q", in, got, c2, err2, c1)
			}
		}
	}
	for _, in := range []string{"/v1/chat%2Fx", "/v1/..;/x", "/a?b#c", "x"} {
		if _, err := NormalizeTarget(in); !errors.Is(err, ErrAmbiguousRequest) {
			t.Errorf("NormalizeTarget(%q): %v, want refused", in, err)
		}
	}
}

func TestCanonicalMethodAndHost(t *testing.T) {
	for in, want := range map[string]string{"GET": "GET", "post": "POST", "Patch": "PATCH", "M-SEARCH": "M-SEARCH"} {
		if got, err := CanonicalMethod(in); err != nil || got != want {
			t.Errorf("CanonicalMethod(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "GE T", "GET\x00", "GÉT", "GET/1"} {
		if _, err := CanonicalMethod(in); err == nil {
			t.Errorf("CanonicalMethod(%q) accepted", in)
		}
	}
	for in, want := range map[string]string{
		"admin.example.com": "admin.example.com", "admin.example.com.": "admin.example.com",
		"Admin.Example.com:8443": "Admin.Example.com", "admin.example.com.:443": "admin.example.com",
		"[::1]:9001": "[::1]", "": "",
	} {
		if got, err := CanonicalHost(in); err != nil || got != want {
			t.Errorf("CanonicalHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"admin .example.com", "admin.example.com\t", "a\x00b", "a/b", "user@admin.example.com", "a,b", "[::1"} {
		if _, err := CanonicalHost(in); err == nil {
			t.Errorf("CanonicalHost(%q) accepted", in)
		}
	}
}

// TestPolicyVariants sends, with a key holding only models:read, the variants of a
// POST to the chat route that an attacker tries: each must be the chat route's 403 (or
// a 400 for the ambiguous ones), never an allow.
func TestPolicyVariants(t *testing.T) {
	fx := policyFixture(t, ProfileMagicx)
	readOnly := fx.withScopes(t, "models:read")
	body := []byte(`{"model":"gpt-4o"}`)
	for _, tc := range []struct {
		method, host, path string
		want               Reason
	}{
		{"POST", "api.example.com", "/v1/chat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/chat/completions/", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/%63hat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/V1/CHAT/COMPLETIONS", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/chat/completions;x=1", ReasonInsufficientScope},
		{"POST", "api.example.com", "//v1/chat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/./chat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/models/../chat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/ｃhat/completions", ReasonInsufficientScope},
		{"post", "api.example.com", "/v1/chat/completions", ReasonInsufficientScope},
		{"POST", "api.example.com", "/v1/chat%2Fcompletions", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/chat%5Ccompletions", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/models/..;/chat/completions", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/chat/completions?_method=GET", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/chat/completions?a=1&%5Fmethod=GET", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/chat/completions?_METHOD=G%45T", ReasonBadRequest},
		{"POST", "api.example.com", "/v1/chat/completions?_method=post", ReasonInsufficientScope},
		{"P OST", "api.example.com", "/v1/chat/completions", ReasonBadRequest},
		{"DELETE", "admin.example.com.", "/x", ReasonInsufficientScope},
		{"DELETE", "ADMIN.EXAMPLE.COM:443", "/x", ReasonInsufficientScope},
		{"DELETE", "admin.example.com ", "/x", ReasonBadRequest},
		{"GET", "api.example.com", "/v1/models/gpt-4o", ReasonAllowed},
		{"HEAD", "api.example.com", "/v1/models/gpt-4o", ReasonAllowed},
		{"GET", "api.example.com", "/v1/models/gpt-4o/", ReasonAllowed},
		{"PUT", "api.example.com", "/v1/models/gpt-4o", ReasonNoRoute},
		{"GET", "api.example.com", "/v2/unknown", ReasonNoRoute},
	} {
		t.Run(tc.method+" "+tc.host+" "+tc.path, func(t *testing.T) {
			req := Request{APIKey: readOnly, Method: tc.method, Host: tc.host, Path: tc.path, Body: body}
			d, err := fx.engine.Check(context.Background(), &req)
			if err != nil || d.Reason != tc.want {
				t.Fatalf("got %v, %v; want %v", d.Reason, err, tc.want)
			}
		})
	}
	t.Run("method override header", func(t *testing.T) {
		req := Request{APIKey: readOnly, Method: "GET", Path: "/v1/models/gpt-4o", MethodOverride: "DELETE"}
		if d, _ := fx.engine.Check(context.Background(), &req); d.Reason != ReasonBadRequest {
			t.Fatalf("override to DELETE: %v", d.Reason)
		}
		req.MethodOverride = "get"
		if d, _ := fx.engine.Check(context.Background(), &req); d.Reason != ReasonAllowed {
			t.Fatalf("override naming the same method: %v", d.Reason)
		}
	})
}

func TestDenyUnmatchedDefault(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	for name, tc := range map[string]struct {
		policy Policy
		want   Reason
	}{
		"no routes: any valid key passes":      {Policy{}, ReasonAllowed},
		"routes: unmatched denied by default":  {Policy{Routes: []Route{{Path: "/v1/status"}}}, ReasonNoRoute},
		"routes, deny_unmatched false":         {Policy{Routes: []Route{{Path: "/v1/status"}}, DenyUnmatched: ptr(false)}, ReasonAllowed},
		"no routes, deny_unmatched true":       {Policy{DenyUnmatched: ptr(true)}, ReasonNoRoute},
		"no routes: ambiguous path not judged": {Policy{}, ReasonAllowed},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := New(Config{Format: fx.engine.format, Lookup: fx.lookup, Policy: tc.policy, Now: fx.engine.now})
			if err != nil {
				t.Fatal(err)
			}
			path := "/v2/other"
			if strings.Contains(name, "ambiguous") {
				path = "/v1/a%2Fb"
			}
			d, err := e.Check(context.Background(), &Request{APIKey: fx.active, Method: "GET", Path: path})
			if err != nil || d.Reason != tc.want {
				t.Fatalf("got %v, %v; want %v", d.Reason, err, tc.want)
			}
			// Authenticate ignores the routes: the admin API works whatever the policy.
			d, err = e.Authenticate(context.Background(), &Request{APIKey: fx.active})
			if err != nil || d.Reason != ReasonAllowed {
				t.Fatalf("Authenticate: %v, %v", d.Reason, err)
			}
		})
	}
}

func TestNeedsBody(t *testing.T) {
	fx := policyFixture(t, ProfileMagicx)
	for _, tc := range []struct {
		method, path string
		want         bool
	}{
		{"POST", "/v1/chat/completions", true},
		{"post", "/v1/%63hat/completions/", true},
		{"POST", "/v1/images/x", false},
		{"GET", "/v1/chat/completions", false},
		{"POST", "/v1/chat%2Fcompletions", false}, // refused before any body is read
	} {
		if got := fx.engine.NeedsBody(tc.method, "api.example.com", tc.path, ""); got != tc.want {
			t.Errorf("NeedsBody(%s %s) = %v", tc.method, tc.path, got)
		}
	}
}

func TestNeedsBodyForForms(t *testing.T) {
	fx := policyFixture(t, ProfileMagicx)
	for ct, want := range map[string]bool{
		"application/x-www-form-urlencoded":                true,
		"Application/X-WWW-Form-Urlencoded; charset=utf-8": true,
		"multipart/form-data; boundary=x":                  true,
		"text/plain, application/x-www-form-urlencoded":    true,
		"application/json":                                 false,
	} {
		if got := fx.engine.NeedsBody("POST", "api.example.com", "/v1/images/x", ct); got != want {
			t.Errorf("NeedsBody with %q = %v", ct, got)
		}
	}
}

// TestOverridesAndForwardedHosts: a form body's _method, and forwarded hosts when the
// policy has host routes.
func TestOverridesAndForwardedHosts(t *testing.T) {
	fx := policyFixture(t, ProfileMagicx)
	readOnly := fx.withScopes(t, "models:read")
	for name, tc := range map[string]struct {
		req  Request
		want Reason
	}{
		"form _method":            {Request{Method: "GET", Path: "/v1/models/x", ContentType: "application/x-www-form-urlencoded", Body: []byte("a=1&_method=DELETE")}, ReasonBadRequest},
		"form _method, same":      {Request{Method: "GET", Path: "/v1/models/x", ContentType: "application/x-www-form-urlencoded", Body: []byte("_method=get")}, ReasonAllowed},
		"form, PHP name":          {Request{Method: "GET", Path: "/v1/models/x", ContentType: "application/x-www-form-urlencoded", Body: []byte("%2Emethod=DELETE")}, ReasonBadRequest},
		"multipart _method":       {Request{Method: "GET", Path: "/v1/models/x", ContentType: "multipart/form-data; boundary=b", Body: []byte("--b\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--b--")}, ReasonBadRequest},
		"json body with _method":  {Request{Method: "GET", Path: "/v1/models/x", ContentType: "application/json", Body: []byte(`{"_method":"DELETE"}`)}, ReasonAllowed},
		"query, last one differs": {Request{Method: "GET", Path: "/v1/models/x?_method=GET&_method=DELETE"}, ReasonBadRequest},
		"query, PHP dot":          {Request{Method: "GET", Path: "/v1/models/x?.method=DELETE"}, ReasonBadRequest},
		"query, PHP bracket":      {Request{Method: "GET", Path: "/v1/models/x?[method=DELETE"}, ReasonBadRequest},
		"x-forwarded-host, other": {Request{Method: "GET", Host: "api.example.com", Path: "/v1/models/x", ForwardedHost: "admin.example.com"}, ReasonBadRequest},
		"x-forwarded-host, list":  {Request{Method: "GET", Host: "api.example.com", Path: "/v1/models/x", ForwardedHost: "api.example.com, admin.example.com"}, ReasonBadRequest},
		"x-forwarded-host, same":  {Request{Method: "GET", Host: "api.example.com", Path: "/v1/models/x", ForwardedHost: "API.example.com:443"}, ReasonAllowed},
		"forwarded host, other":   {Request{Method: "GET", Host: "api.example.com", Path: "/v1/models/x", Forwarded: `for=1.2.3.4;host="admin.example.com";proto=https`}, ReasonBadRequest},
		"forwarded, no host":      {Request{Method: "GET", Host: "api.example.com", Path: "/v1/models/x", Forwarded: "for=1.2.3.4"}, ReasonAllowed},
	} {
		t.Run(name, func(t *testing.T) {
			req := tc.req
			req.APIKey = readOnly
			d, err := fx.engine.Check(context.Background(), &req)
			if err != nil || d.Reason != tc.want {
				t.Fatalf("got %v, %v; want %v", d.Reason, err, tc.want)
			}
		})
	}
}

func TestRequestIDBounds(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	for id, kept := range map[string]bool{
		"req_0123abcd":                         true,
		"0f8fad5b-d9cb-469f-a165-70867728950e": true,
		"":                                     false,
		strings.Repeat("a", 129):               false,
		strings.Repeat("a", 600<<10):           false,
		"id with space":                        false,
		"id\r\nx-injected: 1":                  false,
		`"quoted"`:                             false,
		"x-" + fx.active:                       false, // a key is never kept as an id
	} {
		d, _ := fx.engine.Check(context.Background(), &Request{APIKey: fx.active, RequestID: id, Method: "GET", Path: "/"})
		if got := d.RequestID == id; got != kept {
			t.Errorf("id %.40q kept=%v, want %v (got %.40q)", id, got, kept, d.RequestID)
		}
		if !kept && !strings.HasPrefix(d.RequestID, "req_") {
			t.Errorf("replacement id %q", d.RequestID)
		}
	}
}

// FuzzCanonicalPath checks that the variants of a path that upstream servers route alike
// (escaped unreserved characters, dot segments, doubled and trailing slashes, ';'
// parameters, letter case) have one canonical form, or are refused; and that the
// canonical form is stable.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/v1/chat/completions", "/v1/models/x", "/a/b/c", "/", "/v1/%63hat", "/a;b/c"} {
		f.Add(s, uint64(0))
	}
	fx := policyFixture(f, ProfileMagicx)
	readOnly := fx.withScopes(f, "models:read")
	f.Fuzz(func(t *testing.T, path string, seed uint64) {
		c, err := CanonicalPath(path)
		if err != nil {
			if !errors.Is(err, ErrAmbiguousRequest) {
				t.Fatalf("error %v does not wrap ErrAmbiguousRequest", err)
			}
			return
		}
		if c2, err := CanonicalPath(c); err == nil && c2 != c {
			t.Fatalf("not stable: %q -> %q -> %q", path, c, c2)
		}
		if n, err := NormalizeTarget(path); err == nil {
			if c3, err := CanonicalPath(n); err != nil || c3 != c {
				t.Fatalf("NormalizeTarget(%q) = %q canonicalizes to %q, %v; want %q", path, n, c3, err, c)
			}
		}
		v := variant(c, seed)
		cv, err := CanonicalPath(v)
		if err != nil {
			return
		}
		if !strings.EqualFold(cv, c) {
			t.Fatalf("variant %q of %q canonicalizes to %q, want %q", v, path, cv, c)
		}
		// The same decision for both, whatever the route.
		for _, m := range []string{"GET", "POST"} {
			a := Request{APIKey: readOnly, Method: m, Path: path, Body: []byte(`{"model":"gpt-4o"}`)}
			b := a
			b.Path = v
			da, _ := fx.engine.Check(context.Background(), &a)
			db, _ := fx.engine.Check(context.Background(), &b)
			if da.Reason != db.Reason {
				t.Fatalf("%s %q: %v; its variant %q: %v", m, path, da.Reason, v, db.Reason)
			}
		}
	})
}

// variant rewrites a canonical path into an equivalent one, as an attacker would.
func variant(c string, seed uint64) string {
	var b strings.Builder
	next := func(n uint64) uint64 { seed = seed*6364136223846793005 + 1442695040888963407; return (seed >> 33) % n }
	if next(2) == 0 {
		b.WriteString("/.")
	}
	for _, seg := range strings.Split(strings.TrimPrefix(c, "/"), "/") {
		b.WriteByte('/')
		switch next(6) {
		case 0:
			b.WriteString("/")
		case 1:
			b.WriteString("./")
		case 2:
			b.WriteString("zz/../")
		}
		for i := 0; i < len(seg); i++ {
			ch := seg[i]
			switch {
			case unreserved(ch) && next(4) == 0:
				fmt.Fprintf(&b, "%%%02X", ch)
			case 'a' <= ch && ch <= 'z' && next(4) == 0:
				b.WriteByte(ch - 'a' + 'A')
			case ch == '%' || ch == ';' || ch == '?' || ch == '#' || ch >= 0x80 || ch <= 0x20:
				fmt.Fprintf(&b, "%%%02X", ch)
			default:
				b.WriteByte(ch)
			}
		}
		if next(5) == 0 {
			b.WriteString(";p=1")
		}
	}
	if next(3) == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

// withScopes adds a key holding only scopes to the fixture's store.
func (fx *fixture) withScopes(t testing.TB, scopes ...string) string {
	t.Helper()
	key, err := fx.engine.format.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	fx.lookup.records[HashKey(key)] = Record{ID: "key_Scoped0000000000", Name: "Scoped", Owner: "acct_1", Scopes: scopes,
		Hash: HashKey(key), Hint: fx.engine.format.Hint(key), CreatedAt: testNow.Add(-time.Hour)}
	return key
}

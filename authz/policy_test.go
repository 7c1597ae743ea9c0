package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var testPolicy = Policy{Routes: []Route{
	{Name: "chat", Methods: []string{"POST"}, Path: "/v1/chat/completions", Scope: "chat:completions", Models: true},
	{Name: "images", Prefix: "/v1/images/", Scope: "image:generate"},
	{Name: "model", Methods: []string{"GET"}, Pattern: "/v1/models/*", Scope: "models:read"},
	{Name: "admin-host", Host: "admin.example.com", Scope: "admin"},
	{Name: "hooks", Prefix: "/webhooks/", Webhook: true},
	{Name: "public", Path: "/v1/status"},
}, DenyUnmatched: ptr(true)}

func ptr[T any](v T) *T { return &v }

func TestRouteMatching(t *testing.T) {
	p := testPolicy
	if err := p.validate(); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		method, host, path string
		want               string // route name; "" for none
	}{
		"exact":                {"POST", "api.example.com", "/v1/chat/completions", "chat"},
		"exact with query":     {"POST", "api.example.com", "/v1/chat/completions?stream=true", "chat"},
		"exact, wrong method":  {"GET", "api.example.com", "/v1/chat/completions", ""},
		"exact, longer path":   {"POST", "api.example.com", "/v1/chat/completions/x", ""},
		"prefix":               {"POST", "api.example.com", "/v1/images/generations", "images"},
		"prefix, not a prefix": {"POST", "api.example.com", "/v1/imagesx", ""},
		"pattern":              {"GET", "api.example.com", "/v1/models/mx4-atlas-core", "model"},
		"pattern, empty seg":   {"GET", "api.example.com", "/v1/models/", ""},
		"pattern, too deep":    {"GET", "api.example.com", "/v1/models/a/b", ""},
		"host":                 {"DELETE", "ADMIN.example.com:8443", "/anything", "admin-host"},
		"host, trailing dot":   {"DELETE", "admin.example.com.", "/anything", "admin-host"},
		"host, dot and port":   {"DELETE", "admin.example.com.:443", "/anything", "admin-host"},
		"prefix itself":        {"POST", "api.example.com", "/v1/images", "images"},
		"HEAD on a GET route":  {"HEAD", "api.example.com", "/v1/models/x", "model"},
		"lower-case method":    {"post", "api.example.com", "/v1/chat/completions", "chat"},
		"trailing slash":       {"POST", "api.example.com", "/v1/chat/completions/", "chat"},
		"upper-case path":      {"POST", "api.example.com", "/V1/CHAT/COMPLETIONS", "chat"},
		"host, other":          {"DELETE", "api.example.com", "/anything", ""},
		"first match wins":     {"GET", "admin.example.com", "/v1/models/x", "model"},
		"webhook":              {"POST", "api.example.com", "/webhooks/stripe", "hooks"},
	} {
		t.Run(name, func(t *testing.T) {
			e := &Engine{policy: p}
			r, _, err := e.route(&Request{Method: tc.method, Host: tc.host, Path: tc.path})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if r != nil {
				got = r.Name
			}
			if got != tc.want {
				t.Fatalf("matched %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPolicyValidation(t *testing.T) {
	for name, r := range map[string]Route{
		"two matchers":    {Path: "/a", Prefix: "/b"},
		"relative path":   {Path: "a"},
		"method w/ space": {Methods: []string{"GE T"}},
		"ambiguous path":  {Path: "/a%2Fb"},
		"path w/ query":   {Path: "/a?b"},
		"host w/ space":   {Host: "a b"},
		"scope w/ spaces": {Scope: "a b"},
	} {
		p := Policy{Routes: []Route{r}}
		if err := p.validate(); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestGrants(t *testing.T) {
	chat := &testPolicy.Routes[0]
	images := &testPolicy.Routes[1]
	hooks := &testPolicy.Routes[4]
	public := &testPolicy.Routes[5]
	for name, tc := range map[string]struct {
		scopes []string
		route  *Route
		method string
		want   bool
	}{
		"exact scope":              {[]string{"chat:completions"}, chat, "POST", true},
		"other scope":              {[]string{"models:read"}, chat, "POST", false},
		"no scopes":                {nil, chat, "POST", false},
		"wildcard":                 {[]string{"chat:*"}, chat, "POST", true},
		"wildcard elsewhere":       {[]string{"image:*"}, chat, "POST", false},
		"star":                     {[]string{"*"}, chat, "POST", true},
		"admin":                    {[]string{"admin"}, chat, "DELETE", true},
		"read, GET":                {[]string{"read"}, images, "GET", true},
		"read, POST":               {[]string{"read"}, images, "POST", false},
		"write, POST":              {[]string{"write"}, images, "POST", true},
		"write, DELETE":            {[]string{"write"}, images, "DELETE", false},
		"webhook on webhook route": {[]string{"webhook"}, hooks, "POST", true},
		"webhook elsewhere":        {[]string{"webhook"}, images, "GET", false},
		"write on webhook route":   {[]string{"write"}, hooks, "POST", false},
		"admin on webhook route":   {[]string{"admin"}, hooks, "POST", true},
		"any key on public route":  {nil, public, "GET", true},
		"scope prefix is no match": {[]string{"chat:completions:extra"}, chat, "POST", false},
	} {
		if got := Grants(tc.scopes, tc.route, tc.method); got != tc.want {
			t.Errorf("%s: Grants(%v, %s, %s) = %v", name, tc.scopes, tc.route.Name, tc.method, got)
		}
	}
}

func TestModelOf(t *testing.T) {
	for name, tc := range map[string]struct {
		body    string
		partial bool
		model   string
		err     error
	}{
		"simple":              {`{"model":"gpt-4o","messages":[]}`, false, "gpt-4o", nil},
		"after nested values": {`{"messages":[{"role":"user","content":{"model":"x"}}],"n":1.5,"model":"mx4-atlas-core"}`, false, "mx4-atlas-core", nil},
		"escaped":             {`{"model":"a\u0062c"}`, false, "abc", nil},
		"no model":            {`{"prompt":"hi"}`, false, "", ErrNoModel},
		"model not a string":  {`{"model":42}`, false, "", ErrNoModel},
		"empty model":         {`{"model":""}`, false, "", ErrNoModel},
		"two models":          {`{"model":"cheap","model":"expensive"}`, false, "", ErrDuplicateModel},
		"model in other case": {`{"model":"cheap","Model":"expensive"}`, false, "", ErrDuplicateModel},
		"only other case":     {`{"MODEL":"expensive"}`, false, "", ErrDuplicateModel},
		"escaped key":         {`{"mod\u0065l":"gpt-4o"}`, false, "gpt-4o", nil},
		"escaped duplicate":   {`{"model":"cheap","mod\u0065l":"expensive"}`, false, "", ErrDuplicateModel},
		"array":               {`["model"]`, false, "", ErrBodyNotJSON},
		"empty body":          {``, false, "", ErrBodyNotJSON},
		"truncated":           {`{"model":"gpt-4o","messages":[{"ro`, false, "", ErrBodyNotJSON},
		"truncated, partial":  {`{"model":"gpt-4o","messages":[{"ro`, true, "", ErrBodyIncomplete},
		"trailing data":       {`{"model":"a"} {"model":"b"}`, false, "", ErrBodyNotJSON},
		"model too long":      {`{"model":"` + strings.Repeat("m", 300) + `"}`, false, "", errModelTooLong},
	} {
		t.Run(name, func(t *testing.T) {
			m, err := ModelOf([]byte(tc.body), tc.partial)
			if m != tc.model || !errors.Is(err, tc.err) {
				t.Fatalf("ModelOf = %q, %v; want %q, %v", m, err, tc.model, tc.err)
			}
		})
	}
}

func FuzzModelOf(f *testing.F) {
	for _, s := range []string{`{"model":"gpt-4o"}`, `{"a":[1,{"b":null}],"model":"x"}`, `{"model":"a","model":"b"}`, `[`, `{"model":`, ``} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, partial bool) {
		m, err := ModelOf(body, partial)
		if err != nil {
			return
		}
		// Whatever is accepted is a bounded, non-empty model of a body that names one
		// model, and a body that holds it as JSON.
		if m == "" || len(m) > maxModelLen {
			t.Fatalf("accepted model %q", m)
		}
		if !strings.Contains(string(body), "model") {
			t.Fatalf("found a model in a body without the word: %q", body)
		}
	})
}

// policyFixture is a fixture whose engine applies testPolicy; its active key has the
// scopes chat:completions and models:read, and the models gpt-4o and mx4-atlas-*.
func policyFixture(t testing.TB, p Profile) *fixture {
	fx := newFixture(t, p)
	rec := fx.lookup.records[HashKey(fx.active)]
	rec.Models = []string{"gpt-4o", "mx4-atlas-*"}
	fx.lookup.records[rec.Hash] = rec
	var err error
	fx.engine, err = New(Config{Format: fx.engine.format, Lookup: fx.lookup, Profile: p, Policy: testPolicy,
		Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func TestCheckWithPolicy(t *testing.T) {
	fx := policyFixture(t, ProfileMagicx)
	for name, tc := range map[string]struct {
		req  Request
		want Reason
	}{
		"scoped route":            {Request{Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":"gpt-4o"}`)}, ReasonAllowed},
		"wildcard model":          {Request{Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":"mx4-atlas-core"}`)}, ReasonAllowed},
		"model not allowed":       {Request{Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":"o1-pro"}`)}, ReasonModelNotAllowed},
		"bad body":                {Request{Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":`)}, ReasonBadBody},
		"missing scope":           {Request{Method: "POST", Path: "/v1/images/generations"}, ReasonInsufficientScope},
		"pattern route":           {Request{Method: "GET", Path: "/v1/models/gpt-4o"}, ReasonAllowed},
		"unmatched, deny":         {Request{Method: "GET", Path: "/v2/other"}, ReasonNoRoute},
		"public route":            {Request{Method: "GET", Path: "/v1/status"}, ReasonAllowed},
		"invalid key before body": {Request{Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{`), APIKey: "x"}, ReasonMalformed},
	} {
		t.Run(name, func(t *testing.T) {
			req := tc.req
			if req.APIKey == "" {
				req.APIKey = fx.active
			}
			d, err := fx.engine.Check(context.Background(), &req)
			if err != nil || d.Reason != tc.want {
				t.Fatalf("got %v, %v; want %v", d.Reason, err, tc.want)
			}
		})
	}
}

// TestPolicyBodiesGolden pins the 403, 400 and 429 bodies of every profile.
func TestPolicyBodiesGolden(t *testing.T) {
	for p := Profile(0); p < numProfiles; p++ {
		fx := policyFixture(t, p)
		for r, req := range map[Reason]Request{
			ReasonModelNotAllowed: {Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":"o1-pro"}`)},
			ReasonBadBody:         {Method: "POST", Path: "/v1/chat/completions", Body: []byte(`{"model":1}`)},
			ReasonNoRoute:         {Method: "GET", Path: "/v2/other"},
			ReasonBadRequest:      {Method: "GET", Path: "/v1/a%2Fb"},
			ReasonRateLimited:     {Method: "GET", Path: "/v1/models/gpt-4o"},
		} {
			t.Run(fmt.Sprintf("%v/%v", p, r), func(t *testing.T) {
				req.APIKey = fx.active
				d, err := fx.engine.Check(context.Background(), &req)
				if err != nil {
					t.Fatal(err)
				}
				if r == ReasonRateLimited {
					d = fx.engine.RateLimited(d, 1500*time.Millisecond)
					if d.Denial.RetryAfter != "2" {
						t.Fatalf("Retry-After %q for 1.5s, want 2", d.Denial.RetryAfter)
					}
				}
				if d.Reason != r || d.Denial.Status != r.status() {
					t.Fatalf("got %v (%d), want %v", d.Reason, d.Denial.Status, r)
				}
				checkGolden(t, GoldenPath(p, r), d.Denial.Body)
			})
		}
	}
}

// BenchmarkCheckModelRoute is a valid key on a scoped model route: route match, scope
// check and the body's model read.
func BenchmarkCheckModelRoute(b *testing.B) {
	fx := policyFixture(b, ProfileMagicx)
	body := []byte(`{"model":"mx4-atlas-core","messages":[{"role":"user","content":"Hello"}],"temperature":0.2}`)
	req := Request{APIKey: fx.active, RequestID: "r", Method: "POST", Path: "/v1/chat/completions", Body: body}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := fx.engine.Check(ctx, &req); !d.Allowed() {
			b.Fatal(d.Reason)
		}
	}
}

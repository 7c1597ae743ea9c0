package envoy

import (
	"context"
	"strconv"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/ratelimit"
)

var routes = authz.Policy{Routes: []authz.Route{
	{Name: "chat", Methods: []string{"POST"}, Path: "/v1/chat/completions", Scope: "chat:completions", Models: true},
	{Name: "images", Methods: []string{"POST"}, Prefix: "/v1/images/", Scope: "image:generate"},
}}

func policyEngine(t *testing.T, ks *keyset, p authz.Profile) *authz.Engine {
	t.Helper()
	f, _ := authz.NewFormat(prefix)
	e, err := authz.New(authz.Config{Format: f, Lookup: ks.store, Profile: p, Policy: routes})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// modelKey stores a key allowed only the models gpt-4o and mx4-atlas-*.
func modelKey(t *testing.T, ks *keyset) string {
	t.Helper()
	f, _ := authz.NewFormat(prefix)
	key, rec, err := f.Issue(authz.KeySpec{Name: "models", Owner: "acct_42", Scopes: []string{"chat:completions"},
		Models: []string{"gpt-4o", "mx4-atlas-*"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key
}

// withBody sets the request line and body as Envoy's with_request_body sends them.
func withBody(req *authv3.CheckRequest, method, path, body string, raw, partial bool) *authv3.CheckRequest {
	h := req.GetAttributes().GetRequest().GetHttp()
	h.Method, h.Path = method, path
	h.Headers[":method"], h.Headers[":path"] = method, path
	if raw {
		h.RawBody = []byte(body)
	} else {
		h.Body = body
	}
	if partial {
		h.Headers["x-envoy-auth-partial-body"] = "true"
	}
	return req
}

func TestScopeDenialOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	for p := range authz.Profile(len(authz.Profiles())) {
		client := serve(t, newServer(t, policyEngine(t, ks, p), Options{}))
		req := withBody(envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active}), "POST", "/v1/images/generations", "", false, false)
		resp, err := client.Check(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		dr := resp.GetDeniedResponse()
		if codes.Code(resp.GetStatus().GetCode()) != codes.PermissionDenied || dr.GetStatus().GetCode() != 403 {
			t.Fatalf("%v: %v", p, resp)
		}
		// The golden body names the fixture's scopes, which the keyset's active key shares.
		if want := golden(t, p, authz.ReasonInsufficientScope, authz.Record{}); dr.GetBody() != want {
			t.Fatalf("%v body\n got: %s\nwant: %s", p, dr.GetBody(), want)
		}
	}
}

func TestModelChecksOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	key := modelKey(t, ks)
	client := serve(t, newServer(t, policyEngine(t, ks, authz.ProfileOpenAI), Options{}))
	for name, tc := range map[string]struct {
		body          string
		raw, partial  bool
		status        int // 200 for an allow
		golden        authz.Reason
		goldenSubject authz.Record
	}{
		"allowed model in body":          {`{"model":"gpt-4o","messages":[]}`, false, false, 200, 0, authz.Record{}},
		"allowed model in raw_body":      {`{"messages":[],"model":"mx4-atlas-core"}`, true, false, 200, 0, authz.Record{}},
		"refused model in body":          {`{"model":"o1-pro"}`, false, false, 403, authz.ReasonModelNotAllowed, authz.Record{}},
		"refused model in raw_body":      {`{"model":"o1-pro"}`, true, false, 403, authz.ReasonModelNotAllowed, authz.Record{}},
		"duplicate model":                {`{"model":"gpt-4o","model":"o1-pro"}`, false, false, 400, authz.ReasonBadBody, authz.Record{}},
		"malformed":                      {`{"model":`, false, false, 400, authz.ReasonBadBody, authz.Record{}},
		"partial, model seen, cut short": {`{"model":"gpt-4o","messages":[{"content":"lo`, false, true, 400, authz.ReasonBadBody, authz.Record{}},
		"partial, whole object":          {`{"model":"gpt-4o"}`, true, true, 200, 0, authz.Record{}},
		"no body":                        {``, false, false, 400, authz.ReasonBadBody, authz.Record{}},
	} {
		t.Run(name, func(t *testing.T) {
			req := withBody(envoyRequest(t, map[string]string{"authorization": "Bearer " + key}), "POST", "/v1/chat/completions", tc.body, tc.raw, tc.partial)
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 200 {
				if resp.GetOkResponse() == nil {
					t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
				}
				return
			}
			dr := resp.GetDeniedResponse()
			if int(dr.GetStatus().GetCode()) != tc.status {
				t.Fatalf("status %v, want %d: %s", dr.GetStatus().GetCode(), tc.status, dr.GetBody())
			}
			if want := golden(t, authz.ProfileOpenAI, tc.golden, tc.goldenSubject); dr.GetBody() != want {
				t.Fatalf("body\n got: %s\nwant: %s", dr.GetBody(), want)
			}
		})
	}
	// A key without an allow-list may use any model.
	req := withBody(envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active}), "POST", "/v1/chat/completions", `{"model":"o1-pro"}`, false, false)
	if resp, err := client.Check(context.Background(), req); err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("key without an allow-list: %v %v", resp, err)
	}
}

func TestRateLimitsOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	srv := redistest.Start(t)
	plans := map[string]ratelimit.Plan{"standard": {PerMinute: 60, Burst: 3}}
	local, _ := ratelimit.NewLocal(0, nil)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	for name, backend := range map[string]ratelimit.Backend{"local": local, "redis": ratelimit.NewRedis(rdb, ks.activeRec.ID+":")} {
		t.Run(name, func(t *testing.T) {
			limiter, err := ratelimit.New(backend, plans, "standard")
			if err != nil {
				t.Fatal(err)
			}
			client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{Limits: limiter}))
			check := func() *authv3.CheckResponse {
				resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"x-api-key": ks.active}))
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			for i := range 3 {
				resp := check()
				ok := resp.GetOkResponse()
				if ok == nil {
					t.Fatalf("request %d denied: %s", i, resp.GetDeniedResponse().GetBody())
				}
				h := headerMap(ok.GetResponseHeadersToAdd())
				if h["x-ratelimit-limit"] != "60" || h["x-ratelimit-remaining"] != strconv.Itoa(2-i) || h["x-ratelimit-reset"] == "" {
					t.Fatalf("request %d: rate headers %v", i, h)
				}
				if h["X-API-Key-ID"] != ks.activeRec.ID || h["X-API-Key-Name"] != "Production App" ||
					h["X-API-Key-Scopes"] != "chat:completions,models:read" || h["X-Request-ID"] != envoyRequestID {
					t.Fatalf("request %d: identity headers for the client %v", i, h)
				}
			}
			resp := check()
			dr := resp.GetDeniedResponse()
			if codes.Code(resp.GetStatus().GetCode()) != codes.ResourceExhausted || dr.GetStatus().GetCode() != 429 {
				t.Fatalf("fourth request: %v", resp)
			}
			h := headerMap(dr.GetHeaders())
			if h["retry-after"] != "1" || h["x-ratelimit-remaining"] != "0" || h["x-ratelimit-limit"] != "60" {
				t.Fatalf("429 headers %v", h)
			}
			if want := `{"success":false,"error":{"code":"RATE_LIMITED","message":"Rate limit exceeded. Please try again later.","status":429}}`; dr.GetBody() != want {
				t.Fatalf("429 body %s", dr.GetBody())
			}
		})
	}
}

func TestRedisDownFailOpenOrClosed(t *testing.T) {
	ks := newKeyset(t)
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	limiter, _ := ratelimit.New(ratelimit.NewRedis(rdb, "down:"), map[string]ratelimit.Plan{"p": {PerMinute: 60}}, "p")
	srv.Stop()
	for _, failOpen := range []bool{true, false} {
		client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMythIQ), Options{Limits: limiter, LimiterFailOpen: failOpen}))
		resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"x-api-key": ks.active}))
		if err != nil {
			t.Fatal(err)
		}
		if failOpen && resp.GetOkResponse() == nil {
			t.Fatalf("fail open denied: %v", resp)
		}
		if !failOpen {
			dr := resp.GetDeniedResponse()
			if dr.GetStatus().GetCode() != 503 || dr.GetBody() != golden(t, authz.ProfileMythIQ, authz.ReasonUnavailable, authz.Record{}) {
				t.Fatalf("fail closed: %v", resp)
			}
		}
	}
}

// TestCanonicalRequestOverGRPC sends, over a real connection, the variants of a chat
// request an attacker tries with a key that lacks the chat scope: Envoy-shaped, with the
// path in both the attributes and the :path header as Envoy sends it.
func TestCanonicalRequestOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	f, _ := authz.NewFormat(prefix)
	readOnly, rec, err := f.Issue(authz.KeySpec{Name: "read only", Owner: "acct_42", Scopes: []string{"models:read"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	client := serve(t, newServer(t, policyEngine(t, ks, authz.ProfileMagicx), Options{}))
	body := `{"model":"gpt-4o"}`
	for _, tc := range []struct {
		method, path string
		headers      map[string]string
		status       int
		reason       authz.Reason
	}{
		{"POST", "/v1/chat/completions", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/v1/chat/completions/", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/v1/%63hat/completions", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/V1/CHAT/COMPLETIONS", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/v1/chat/completions;x=1", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "//v1/chat/completions", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/v1/./chat/completions", nil, 403, authz.ReasonInsufficientScope},
		{"post", "/v1/chat/completions", nil, 403, authz.ReasonInsufficientScope},
		{"POST", "/v1/chat%2Fcompletions", nil, 400, authz.ReasonBadRequest},
		{"POST", "/v1/images/..;/chat/completions", nil, 400, authz.ReasonBadRequest},
		{"GET", "/v1/images/x", map[string]string{"x-http-method-override": "POST"}, 400, authz.ReasonBadRequest},
		{"GET", "/v1/status", nil, 403, authz.ReasonNoRoute}, // unmatched: denied by default
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			h := map[string]string{"authorization": "Bearer " + readOnly}
			for k, v := range tc.headers {
				h[k] = v
			}
			resp, err := client.Check(context.Background(), withBody(envoyRequest(t, h), tc.method, tc.path, body, true, false))
			if err != nil {
				t.Fatal(err)
			}
			dr := resp.GetDeniedResponse()
			if dr == nil || int(dr.GetStatus().GetCode()) != tc.status {
				t.Fatalf("got %v, want %d", resp, tc.status)
			}
			if want := golden(t, authz.ProfileMagicx, tc.reason, authz.Record{}); tc.reason != authz.ReasonInsufficientScope && dr.GetBody() != want {
				t.Fatalf("body %s, want %s", dr.GetBody(), want)
			}
		})
	}
}

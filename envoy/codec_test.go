package envoy

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/certtest"
	"github.com/keygate/keygate/ratelimit"
)

// encode is what the gRPC server sends for the answer to req under Codec: the bytes,
// the CheckResponse Check returns for that same answer (built as proto messages), and
// whether the prebuilt path made the bytes.
func encode(t *testing.T, s *Server, req *authv3.CheckRequest) ([]byte, *authv3.CheckResponse, bool) {
	t.Helper()
	v, err := s.answer(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var normal *authv3.CheckResponse
	fast := false
	switch r := v.(type) {
	case *allowedResponse:
		normal, fast = &r.CheckResponse, r.wireable()
	case *authv3.CheckResponse:
		normal = r
	default:
		t.Fatalf("answer %T", v)
	}
	data, err := codec{}.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	b := data.Materialize()
	data.Free()
	return b, normal, fast
}

// checkWire asserts that the bytes decode to the CheckResponse built the normal way,
// and are byte for byte what proto.Marshal (deterministic) makes of it.
func checkWire(t *testing.T, s *Server, req *authv3.CheckRequest, wantFast bool) *authv3.CheckResponse {
	t.Helper()
	b, normal, fast := encode(t, s, req)
	if fast != wantFast {
		t.Fatalf("prebuilt path %v, want %v", fast, wantFast)
	}
	var got authv3.CheckResponse
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatalf("the bytes are no CheckResponse: %v", err)
	}
	if !proto.Equal(&got, normal) {
		t.Fatalf("decoded\n%v\nwant\n%v", &got, normal)
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(normal)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("bytes differ from proto.Marshal's:\n%x\n%x", b, want)
	}
	return &got
}

func TestWireEqualsProto(t *testing.T) {
	f, _ := authz.NewFormat(prefix)
	long := strings.Repeat("n", 300) // lengths past one varint byte
	many := make([]string, 40)
	for i := range many {
		many[i] = "scope:" + strings.Repeat("s", i)
	}
	for name, tc := range map[string]struct {
		spec   authz.KeySpec
		rec    func(*authz.Record) // a record as no key spec makes it
		opts   Options
		limits bool
		reqID  string // "" keeps the fixture's; "-" removes it (the engine makes one)
	}{
		"plain":                {spec: authz.KeySpec{Name: "Production App", Owner: "acct_42", Scopes: []string{"models:read", "chat:completions"}}},
		"no scopes, no owner":  {spec: authz.KeySpec{Name: "bare", Owner: "o"}, rec: func(r *authz.Record) { r.Owner = "" }},
		"non-ASCII name":       {spec: authz.KeySpec{Name: "x", Owner: "acct_42", Scopes: []string{"chat:completions"}}, rec: func(r *authz.Record) { r.Name, r.Owner = "Équipe 東京 ✓", "acct_é" }},
		"long name, 40 scopes": {spec: authz.KeySpec{Name: "x", Owner: "acct_42"}, rec: func(r *authz.Record) { r.Name, r.Owner, r.Scopes = long, long, many }},
		"keep credentials":     {spec: authz.KeySpec{Name: "kept", Owner: "acct_42"}, opts: Options{KeepCredentials: true}},
		"rate-limit headers":   {spec: authz.KeySpec{Name: "limited", Owner: "acct_42", Scopes: []string{"chat:completions"}}, limits: true},
		"generated request id": {spec: authz.KeySpec{Name: "gen", Owner: "acct_42"}, reqID: "-"},
		"128-byte request id":  {spec: authz.KeySpec{Name: "rid", Owner: "acct_42"}, reqID: strings.Repeat("r", 128)},
		"one-byte request id":  {spec: authz.KeySpec{Name: "rid", Owner: "acct_42"}, reqID: "r"},
		"rate limit, long parts": {spec: authz.KeySpec{Name: "x", Owner: "acct_42"}, rec: func(r *authz.Record) { r.Name, r.Scopes = long, many },
			limits: true, reqID: strings.Repeat("q", 128)},
	} {
		t.Run(name, func(t *testing.T) {
			key, rec, err := f.Issue(tc.spec, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if tc.rec != nil {
				tc.rec(&rec)
			}
			e, err := authz.New(authz.Config{Format: f, Lookup: staticLookup{rec}})
			if err != nil {
				t.Fatal(err)
			}
			opts := tc.opts
			if tc.limits {
				local, _ := ratelimit.NewLocal(0, nil)
				if opts.Limits, err = ratelimit.New(local, map[string]ratelimit.Plan{"standard": {PerMinute: 600, Burst: 200}}, "standard"); err != nil {
					t.Fatal(err)
				}
			}
			s := newServer(t, e, opts)
			headers := map[string]string{"authorization": "Bearer " + key}
			switch tc.reqID {
			case "":
			case "-":
				headers["x-request-id"] = ""
			default:
				headers["x-request-id"] = tc.reqID
			}
			for range 2 { // a new view, then the same view again
				got := checkWire(t, s, envoyRequest(t, headers), true)
				if got.GetOkResponse() == nil {
					t.Fatalf("denied: %s", got.GetDeniedResponse().GetBody())
				}
				if tc.limits && headerMap(got.GetOkResponse().GetResponseHeadersToAdd())["x-ratelimit-limit"] != "600" {
					t.Fatalf("no rate-limit headers: %v", got)
				}
			}
		})
	}

	// Denials (the proto path), a 429 with its rate-limit headers among them.
	key, rec, err := f.Issue(authz.KeySpec{Name: "d", Owner: "acct_42", Scopes: []string{"x"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, _ := authz.New(authz.Config{Format: f, Lookup: staticLookup{rec}})
	local, _ := ratelimit.NewLocal(0, nil)
	limiter, err := ratelimit.New(local, map[string]ratelimit.Plan{"standard": {PerMinute: 60, Burst: 1}}, "standard")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, e, Options{Limits: limiter})
	for _, step := range []struct {
		name    string
		headers map[string]string
		allowed bool
	}{
		{"missing", map[string]string{}, false},
		{"bad checksum", map[string]string{"authorization": "Bearer " + key[:len(key)-1] + "!"}, false},
		{"allowed", map[string]string{"authorization": "Bearer " + key}, true},
		{"rate limited", map[string]string{"authorization": "Bearer " + key}, false},
	} {
		t.Run(step.name, func(t *testing.T) {
			got := checkWire(t, s, envoyRequest(t, step.headers), step.allowed)
			if (got.GetOkResponse() != nil) != step.allowed {
				t.Fatalf("answer %v", got)
			}
		})
	}
}

// A certificate let in by an identity rule is answered through the prebuilt path too.
func TestWireIdentityRule(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	billing := ca.Issue(t, certtest.LeafOptions{CommonName: "billing", URIs: []string{"spiffe://example.org/ns/prod/sa/billing"}})
	verifier, err := certs.NewVerifier(ca.CertPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat(prefix)
	e, err := authz.New(authz.Config{Format: f, Lookup: staticLookup{},
		IdentityRules: []authz.IdentityRule{{Name: "billing", SPIFFE: "spiffe://example.org/ns/*/sa/billing", Scopes: []string{"ledger:write"}}}})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, e, Options{ClientCerts: func() *certs.Verifier { return verifier }})
	got := checkWire(t, s, withPeer(envoyRequest(t, nil), billing), true)
	if id := headerMap(got.GetOkResponse().GetHeaders())["x-api-key-id"]; id != "cert:billing" {
		t.Fatalf("x-api-key-id %q: %v", id, got)
	}
}

// A record string that is not UTF-8 is refused by proto.Marshal: the prebuilt path
// declines it and the answer fails as it always did, rather than sending bytes Envoy
// would reject.
func TestWireRefusesInvalidUTF8(t *testing.T) {
	f, _ := authz.NewFormat(prefix)
	key, rec, err := f.Issue(authz.KeySpec{Name: "ok", Owner: "acct_42"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rec.Name = "bad \xff name"
	e, _ := authz.New(authz.Config{Format: f, Lookup: staticLookup{rec}})
	s := newServer(t, e, Options{})
	v, err := s.answer(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + key}))
	if err != nil {
		t.Fatal(err)
	}
	a, ok := v.(*allowedResponse)
	if !ok || a.wireable() {
		t.Fatalf("answer %T, prebuilt path taken", v)
	}
	_, perr := proto.Marshal(&a.CheckResponse)
	if _, err := (codec{}).Marshal(v); err == nil || perr == nil {
		t.Fatalf("codec error %v, proto.Marshal error %v: want both to refuse", err, perr)
	}
}

// Over gRPC, with and without the codec, a client reads the same answer Check returns.
func TestCodecOverGRPC(t *testing.T) {
	f, _ := authz.NewFormat(prefix)
	key, rec, err := f.Issue(authz.KeySpec{Name: "Production App", Owner: "acct_42", Scopes: []string{"models:read", "chat:completions"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e, _ := authz.New(authz.Config{Format: f, Lookup: staticLookup{rec}})
	s := newServer(t, e, Options{})
	for _, headers := range []map[string]string{{"authorization": "Bearer " + key}, {"authorization": "Bearer nope"}, {}} {
		want, err := s.Check(context.Background(), envoyRequest(t, headers))
		if err != nil {
			t.Fatal(err)
		}
		for name, client := range map[string]authv3.AuthorizationClient{"codec": serve(t, s), "proto codec": serveWith(t, s)} {
			got, err := client.Check(context.Background(), envoyRequest(t, headers))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Fatalf("%s: got\n%v\nwant\n%v", name, got, want)
			}
		}
	}
}

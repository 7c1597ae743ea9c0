package envoy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/hashicorp/vault/api"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/vaultstore"
)

// shared is the package's Vault dev server, started by the first test that needs it.
var shared vaulttest.Shared

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

func vault(t testing.TB) *vaulttest.Server { return shared.Get(t) }

const prefix = "mgx-sk-"

// keyset is a Vault path holding one key in each state.
type keyset struct {
	store                                *vaultstore.Store
	reads                                *vaulttest.Counter // Vault requests for records/
	active, revoked, expired             string
	activeRec, revokedRec, expiredRec    authz.Record
	unknown, badChecksum, wrongPrefixKey string
}

func newKeyset(t *testing.T) *keyset {
	t.Helper()
	ks := &keyset{}
	client := vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
		ks.reads = &vaulttest.Counter{Next: next, Contains: "/records/"}
		return ks.reads
	})
	var err error
	ks.store, err = vaultstore.New(vaultstore.Config{Client: client, Path: vaulttest.UniquePath(t)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := authz.NewFormat(prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create := func(name string, mod func(*authz.Record)) (string, authz.Record) {
		key, rec, err := f.Issue(authz.KeySpec{Name: name, Owner: "acct_42", Scopes: []string{"models:read", "chat:completions"}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if mod != nil {
			mod(&rec)
		}
		if err := ks.store.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		return key, rec
	}
	ks.active, ks.activeRec = create("Production App", nil)
	ks.expired, ks.expiredRec = create("Old App", func(r *authz.Record) {
		r.ExpiresAt = time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	})
	ks.revoked, ks.revokedRec = create("Leaked App", nil)
	if ks.revokedRec, err = ks.store.Revoke(ctx, ks.revokedRec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if ks.unknown, err = f.Generate(nil); err != nil {
		t.Fatal(err)
	}
	last := ks.active[len(ks.active)-1]
	swap := byte('A')
	if last == 'A' {
		swap = 'B'
	}
	ks.badChecksum = ks.active[:len(ks.active)-1] + string(swap)
	ks.wrongPrefixKey = "mx4-sk-" + ks.active[len(prefix):]
	return ks
}

func newServer(t *testing.T, e *authz.Engine, opts Options) *Server {
	t.Helper()
	s, err := NewServer(e, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve starts a real gRPC server for s on a loopback port, with the Codec option as
// serve runs it, and returns a client of it.
func serve(t testing.TB, s *Server, opts ...grpc.ServerOption) authv3.AuthorizationClient {
	t.Helper()
	return serveWith(t, s, append(opts, Codec())...)
}

// serveWith is serve with exactly opts.
func serveWith(t testing.TB, s *Server, opts ...grpc.ServerOption) authv3.AuthorizationClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func newEngine(t *testing.T, lookup authz.KeyLookup, p authz.Profile) *authz.Engine {
	t.Helper()
	f, err := authz.NewFormat(prefix)
	if err != nil {
		t.Fatal(err)
	}
	e, err := authz.New(authz.Config{Format: f, Lookup: lookup, Profile: p})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// envoyRequest returns the CheckRequest of testdata/envoy/check_request.json (shaped as
// Envoy's ext_authz filter sends it) with extra headers set.
func envoyRequest(t *testing.T, headers map[string]string) *authv3.CheckRequest {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "envoy", "check_request.json"))
	if err != nil {
		t.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	h := req.GetAttributes().GetRequest().GetHttp().GetHeaders()
	for k, v := range headers {
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return &req
}

const envoyRequestID = "9f2b4c1e-7a55-4d0c-9e8b-2f6a1d3c5b7e"

// golden returns the golden deny body for a profile and reason, with the fixture's key
// id and expiry replaced by rec's.
func golden(t *testing.T, p authz.Profile, r authz.Reason, rec authz.Record) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "deny", p.String(), r.String()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	body := strings.TrimSuffix(string(raw), "\n")
	body = strings.ReplaceAll(body, "key_GoldenFixture000", rec.ID)
	return strings.ReplaceAll(body, "2024-01-01T00:00:00Z", rec.ExpiresAt.UTC().Format(time.RFC3339))
}

func headerMap(opts []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, o := range opts {
		m[o.GetHeader().GetKey()] = o.GetHeader().GetValue()
	}
	return m
}

func TestDenialsOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	for p := range authz.Profile(len(authz.Profiles())) {
		client := serve(t, newServer(t, newEngine(t, ks.store, p), Options{}))
		for name, tc := range map[string]struct {
			headers   map[string]string
			reason    authz.Reason
			rec       authz.Record
			challenge string
		}{
			"missing":            {nil, authz.ReasonMissing, authz.Record{}, `Bearer realm="keygate"`},
			"basic scheme":       {map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, authz.ReasonMalformed, authz.Record{}, `Bearer realm="keygate", error="invalid_request"`},
			"wrong prefix":       {map[string]string{"authorization": "Bearer " + ks.wrongPrefixKey}, authz.ReasonMalformed, authz.Record{}, `Bearer realm="keygate", error="invalid_request"`},
			"whitespace inside":  {map[string]string{"x-api-key": ks.active[:12] + " " + ks.active[12:]}, authz.ReasonMalformed, authz.Record{}, `Bearer realm="keygate", error="invalid_request"`},
			"two different keys": {map[string]string{"authorization": "Bearer " + ks.active, "x-api-key": ks.unknown}, authz.ReasonMalformed, authz.Record{}, `Bearer realm="keygate", error="invalid_request"`},
			"bad checksum":       {map[string]string{"authorization": "Bearer " + ks.badChecksum}, authz.ReasonBadChecksum, authz.Record{}, `Bearer realm="keygate", error="invalid_token"`},
			"unknown":            {map[string]string{"authorization": "Bearer " + ks.unknown}, authz.ReasonUnknownKey, authz.Record{}, `Bearer realm="keygate", error="invalid_token"`},
			"revoked":            {map[string]string{"x-api-key": ks.revoked}, authz.ReasonRevoked, ks.revokedRec, `Bearer realm="keygate", error="invalid_token"`},
			"expired":            {map[string]string{"authorization": "bearer " + ks.expired}, authz.ReasonExpired, ks.expiredRec, `Bearer realm="keygate", error="invalid_token"`},
		} {
			t.Run(p.String()+"/"+name, func(t *testing.T) {
				resp, err := client.Check(context.Background(), envoyRequest(t, tc.headers))
				if err != nil {
					t.Fatalf("Check returned a gRPC error for a denial: %v", err)
				}
				if got := codes.Code(resp.GetStatus().GetCode()); got != codes.Unauthenticated {
					t.Fatalf("status %v, want Unauthenticated", got)
				}
				dr := resp.GetDeniedResponse()
				if dr == nil || resp.GetOkResponse() != nil {
					t.Fatalf("no denied_response: %v", resp)
				}
				if dr.GetStatus().GetCode() != 401 {
					t.Fatalf("HTTP status %v", dr.GetStatus().GetCode())
				}
				if want := golden(t, p, tc.reason, tc.rec); dr.GetBody() != want {
					t.Fatalf("body\n got: %s\nwant: %s", dr.GetBody(), want)
				}
				h := headerMap(dr.GetHeaders())
				if h["content-type"] != "application/json" || h["www-authenticate"] != tc.challenge || h["x-request-id"] != envoyRequestID {
					t.Fatalf("headers %v", h)
				}
				if strings.Contains(dr.String(), ks.active[len(prefix):len(prefix)+authz.RandomLen]) {
					t.Fatal("the denial echoes key material")
				}
			})
		}
	}
}

func TestAllowOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{}))
	for name, headers := range map[string]map[string]string{
		"bearer":           {"authorization": "Bearer " + ks.active},
		"x-api-key":        {"x-api-key": ks.active},
		"both, same key":   {"authorization": "Bearer " + ks.active, "x-api-key": ks.active},
		"spoofed identity": {"authorization": "Bearer " + ks.active, "x-api-key-id": "key_admin", "x-api-key-scopes": "admin"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), envoyRequest(t, headers))
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != codes.OK || resp.GetOkResponse() == nil {
				t.Fatalf("not allowed: %v", resp)
			}
			ok := resp.GetOkResponse()
			want := map[string]string{
				"x-api-key-id":     ks.activeRec.ID,
				"x-api-key-name":   "Production App",
				"x-api-key-scopes": "chat:completions,models:read",
				"x-request-id":     envoyRequestID,
			}
			for _, o := range ok.GetHeaders() {
				if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("%s: append_action %v; client-sent copies would survive", o.GetHeader().GetKey(), o.GetAppendAction())
				}
			}
			if got := headerMap(ok.GetHeaders()); len(got) != len(want) {
				t.Fatalf("upstream headers %v, want %v", got, want)
			} else {
				for k, v := range want {
					if got[k] != v {
						t.Fatalf("upstream header %s = %q, want %q", k, got[k], v)
					}
				}
			}
			if strings.Join(ok.GetHeadersToRemove(), ",") != "authorization,x-api-key" {
				t.Fatalf("headers_to_remove %v", ok.GetHeadersToRemove())
			}
			md := resp.GetDynamicMetadata().AsMap()
			if md["key_id"] != ks.activeRec.ID || md["key_name"] != "Production App" || md["owner"] != "acct_42" {
				t.Fatalf("dynamic_metadata %v", md)
			}
			if sc, _ := md["scopes"].([]any); len(sc) != 2 || sc[0] != "chat:completions" || sc[1] != "models:read" {
				t.Fatalf("dynamic_metadata scopes %v", md["scopes"])
			}
		})
	}
}

func TestAllowGeneratesRequestID(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{}))
	resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active, "x-request-id": ""}))
	if err != nil {
		t.Fatal(err)
	}
	if id := headerMap(resp.GetOkResponse().GetHeaders())["x-request-id"]; !strings.HasPrefix(id, "req_") {
		t.Fatalf("x-request-id %q, want a generated req_ id", id)
	}
}

func TestKeepCredentials(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{KeepCredentials: true}))
	resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"x-api-key": ks.active}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil || len(resp.GetOkResponse().GetHeadersToRemove()) != 0 {
		t.Fatalf("response %v", resp)
	}
}

// TestRawHeaders covers encode_raw_headers: headers arrive in header_map with raw_value,
// names as sent, repeated headers not merged.
func TestRawHeaders(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMythIQ), Options{}))
	raw := func(kv ...string) *authv3.CheckRequest {
		req := envoyRequest(t, nil)
		h := req.GetAttributes().GetRequest().GetHttp()
		h.Headers = nil
		h.HeaderMap = &corev3.HeaderMap{}
		for i := 0; i < len(kv); i += 2 {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
		}
		return req
	}
	for name, tc := range map[string]struct {
		req    *authv3.CheckRequest
		reason authz.Reason // ReasonAllowed for an allow
	}{
		"bearer":                  {raw(":path", "/v1/models", "authorization", "Bearer "+ks.active), authz.ReasonAllowed},
		"mixed-case name":         {raw("X-Api-Key", ks.active), authz.ReasonAllowed},
		"two authorization lines": {raw("authorization", "Bearer "+ks.active, "authorization", "Bearer "+ks.active), authz.ReasonMalformed},
		"none":                    {raw("accept", "*/*"), authz.ReasonMissing},
		"revoked":                 {raw("authorization", "Bearer "+ks.revoked), authz.ReasonRevoked},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.reason == authz.ReasonAllowed {
				if resp.GetOkResponse() == nil {
					t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
				}
				return
			}
			if got, want := resp.GetDeniedResponse().GetBody(), golden(t, authz.ProfileMythIQ, tc.reason, authz.Record{}); got != want {
				t.Fatalf("body %s, want %s", got, want)
			}
		})
	}
}

func TestBadChecksumCausesNoVaultRead(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{}))
	before := ks.reads.Count()
	for range 50 {
		resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.badChecksum}))
		if err != nil || resp.GetDeniedResponse() == nil {
			t.Fatalf("bad checksum: %v, %v", resp, err)
		}
	}
	if n := ks.reads.Count() - before; n != 0 {
		t.Fatalf("50 bad-checksum checks made %d Vault reads, want 0", n)
	}
	// The counter does see the reads a well-formed unknown key causes.
	if _, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.unknown})); err != nil {
		t.Fatal(err)
	}
	if n := ks.reads.Count() - before; n != 1 {
		t.Fatalf("an unknown key made %d Vault reads, want 1", n)
	}
}

func TestVaultDownIs503(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.Address = "http://127.0.0.1:1"
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	down, err := vaultstore.New(vaultstore.Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, down, authz.ProfileOpenAI), Options{}))
	resp, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active}))
	if err != nil {
		t.Fatalf("Check with Vault down: %v, want a 503 denial", err)
	}
	dr := resp.GetDeniedResponse()
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable || dr.GetStatus().GetCode() != 503 {
		t.Fatalf("response %v", resp)
	}
	if want := golden(t, authz.ProfileOpenAI, authz.ReasonUnavailable, authz.Record{}); dr.GetBody() != want {
		t.Fatalf("body %s, want %s", dr.GetBody(), want)
	}
	if h := headerMap(dr.GetHeaders()); h["retry-after"] != "1" || h["www-authenticate"] != "" {
		t.Fatalf("headers %v", h)
	}
	// Missing and malformed credentials are still decided without Vault.
	resp, err = client.Check(context.Background(), envoyRequest(t, nil))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("missing key with Vault down: %v, %v", resp, err)
	}
}

// corruptLookup fails in a way the engine cannot classify.
type corruptLookup struct{}

func (corruptLookup) Lookup(context.Context, authz.KeyHash) (authz.Record, error) {
	return authz.Record{}, errors.New("decode record: unexpected end of JSON input")
}

func TestUndecidedIsAGRPCError(t *testing.T) {
	ks := newKeyset(t)
	client := serve(t, newServer(t, newEngine(t, corruptLookup{}, authz.ProfileMagicx), Options{}))
	_, err := client.Check(context.Background(), envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active}))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Check with a corrupt store: %v, want a gRPC Unavailable error", err)
	}
	if strings.Contains(err.Error(), "decode") {
		t.Fatal("the gRPC error exposes internals")
	}
}

// BenchmarkServerCheckWithMetrics is BenchmarkServerCheck with an OTel SDK meter
// provider installed, as serve runs it: the cost of counting and timing each check.
func BenchmarkServerCheckWithMetrics(b *testing.B) {
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
	defer otel.SetMeterProvider(prev)
	BenchmarkServerCheck(b)
}

func BenchmarkServerCheck(b *testing.B) {
	s, req := benchServer(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Check(ctx, req)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerCheckEncoded is a check and its answer's encoding, as the gRPC server
// makes it: with Codec (prebuilt parts), and with gRPC's proto codec.
func BenchmarkServerCheckEncoded(b *testing.B) {
	for name, c := range map[string]encoding.CodecV2{"prebuilt": codec{}, "proto": encoding.GetCodecV2(grpcproto.Name)} {
		b.Run(name, func(b *testing.B) {
			s, req := benchServer(b)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := s.answer(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				data, err := c.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				data.Free()
			}
		})
	}
}

// benchServer is a Server with the usage recorder serve uses, and a valid key's
// Envoy-shaped request.
func benchServer(b *testing.B) (*Server, *authv3.CheckRequest) { return benchServerWith(b, false) }

// benchPolicy is scripts/bench's realistic policy: 5 routes, the request matching the
// third, which needs a scope.
var benchPolicy = authz.Policy{Routes: []authz.Route{
	{Name: "models", Methods: []string{"GET"}, Prefix: "/v1/models", Scope: "models:read"},
	{Name: "embeddings", Methods: []string{"POST"}, Path: "/v1/embeddings", Scope: "embeddings"},
	{Name: "chat", Methods: []string{"POST"}, Path: "/v1/chat/completions", Scope: "chat:completions"},
	{Name: "files", Prefix: "/v1/files/", Scope: "files"},
	{Name: "audio", Methods: []string{"POST"}, Pattern: "/v1/audio/*", Scope: "audio"},
}}

// benchServerWith is benchServer, with policy: scripts/bench's policy and its local
// rate-limit plan (per key and per owner, never reached).
func benchServerWith(b *testing.B, policy bool) (*Server, *authv3.CheckRequest) {
	f, _ := authz.NewFormat(prefix)
	key, rec, err := f.Issue(authz.KeySpec{Name: "bench", Owner: "acct_bench", Scopes: []string{"chat:completions", "models:read"}}, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	cfg := authz.Config{Format: f, Lookup: staticLookup{rec}}
	var opts Options
	if policy {
		cfg.Policy = benchPolicy
		local, err := ratelimit.NewLocal(0, nil)
		if err != nil {
			b.Fatal(err)
		}
		plans := map[string]ratelimit.Plan{"standard": {PerMinute: 100_000_000, Burst: 10_000_000,
			OwnerPerMinute: 1_000_000_000, OwnerBurst: 100_000_000}}
		if opts.Limits, err = ratelimit.New(local, plans, "standard"); err != nil {
			b.Fatal(err)
		}
	}
	e, err := authz.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	// The usage recorder serve uses, never flushed here: its in-memory cost only.
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	store, err := vaultstore.New(vaultstore.Config{Client: client})
	if err != nil {
		b.Fatal(err)
	}
	opts.Usage = store.NewUsage()
	s, err := NewServer(e, opts)
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "envoy", "check_request.json"))
	if err != nil {
		b.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		b.Fatal(err)
	}
	req.Attributes.Request.Http.Headers["authorization"] = "Bearer " + key
	return s, &req
}

// staticLookup answers every lookup with one record: it isolates the adapter's cost.
type staticLookup struct{ rec authz.Record }

func (s staticLookup) Lookup(context.Context, authz.KeyHash) (authz.Record, error) {
	return s.rec, nil
}

// usageLog records Seen calls.
type usageLog struct {
	mu  sync.Mutex
	ids []string
}

func (u *usageLog) Seen(id string, _ time.Time) {
	u.mu.Lock()
	u.ids = append(u.ids, id)
	u.mu.Unlock()
}

func TestAuditAndUsage(t *testing.T) {
	ks := newKeyset(t)
	var log bytes.Buffer
	usage := &usageLog{}
	f, _ := authz.NewFormat(prefix)
	engine, err := authz.New(authz.Config{Format: f, Lookup: ks.store, Policy: authz.Policy{Routes: []authz.Route{
		{Name: "chat", Path: "/v1/chat/completions", Scope: "chat:completions"}}}})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, newServer(t, engine, Options{Audit: audit.New(&log), Usage: usage}))
	// Known keys refused with their record cleared or kept: the event names them all the
	// same, with their owner, so that the owner may see it (GET /audit).
	mk := func(spec authz.KeySpec) (string, authz.Record) {
		key, rec, err := f.Issue(spec, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := ks.store.Create(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		return key, rec
	}
	noScope, noScopeRec := mk(authz.KeySpec{Name: "images only", Owner: "acct_43", Scopes: []string{"image:generate"}})
	bound, boundRec := mk(authz.KeySpec{Name: "bound", Owner: "acct_44", Scopes: []string{"models:read", "chat:completions"},
		BoundCert: "sha256:" + strings.Repeat("ab", 32)})
	for _, h := range []map[string]string{
		{"authorization": "Bearer " + ks.active},
		{"authorization": "Bearer " + ks.badChecksum},
		{"x-api-key": ks.expired},
		{"x-api-key": ks.revoked},
		{"x-api-key": noScope},
		{"x-api-key": bound},
	} {
		if _, err := client.Check(context.Background(), envoyRequest(t, h)); err != nil {
			t.Fatal(err)
		}
	}
	if len(usage.ids) != 1 || usage.ids[0] != ks.activeRec.ID {
		t.Fatalf("usage recorded %v, want the one allowed key", usage.ids)
	}
	var events []audit.Event
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	want := []struct {
		event, reason, keyID, owner string
		status                      int
	}{
		{audit.AuthFailed, "bad_checksum", "", "", 401},
		{audit.KeyExpiredOnUse, "expired_key", ks.expiredRec.ID, "acct_42", 401},
		{audit.AuthFailed, "revoked_key", ks.revokedRec.ID, "acct_42", 401},
		{audit.AuthFailed, "insufficient_scope", noScopeRec.ID, "acct_43", 403},
		{audit.AuthFailed, "cert_mismatch", boundRec.ID, "acct_44", 401},
	}
	if len(events) != len(want) {
		t.Fatalf("%d audit events, want %d:\n%s", len(events), len(want), log.String())
	}
	for i, w := range want {
		e := events[i]
		if e.Event != w.event || e.Reason != w.reason || e.KeyID != w.keyID || e.Owner != w.owner || e.Source != "10.1.2.3:53122" ||
			e.RequestID != envoyRequestID || e.Status != w.status {
			t.Errorf("event %d: %+v, want %+v", i, e, w)
		}
	}
	for _, k := range []string{ks.active, ks.badChecksum, ks.expired, ks.revoked, noScope, bound} {
		if strings.Contains(log.String(), k[len(prefix):len(prefix)+20]) {
			t.Fatal("the audit log holds key material")
		}
	}
}

// BenchmarkGRPCCheck is Checks from concurrent callers over a real loopback gRPC
// connection (client and server in one process, on the same 2 cores), with and without
// OTel's gRPC instrumentation and the SDK meter provider serve installs.
func BenchmarkGRPCCheck(b *testing.B) {
	for _, tc := range []struct {
		name              string
		sdkMetrics, trace bool
	}{{"plain", false, false}, {"sdk-metrics", true, false}, {"sdk-metrics+otelgrpc", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			var opts []grpc.ServerOption
			if tc.sdkMetrics {
				prev := otel.GetMeterProvider()
				otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
				defer otel.SetMeterProvider(prev)
			}
			if tc.trace {
				opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()))))
			}
			f, _ := authz.NewFormat(prefix)
			key, rec, err := f.Issue(authz.KeySpec{Name: "bench", Owner: "acct_bench", Scopes: []string{"chat:completions"}}, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			e, _ := authz.New(authz.Config{Format: f, Lookup: staticLookup{rec}})
			s, err := NewServer(e, Options{})
			if err != nil {
				b.Fatal(err)
			}
			client := serve(b, s, opts...)
			raw, _ := os.ReadFile(filepath.Join("..", "testdata", "envoy", "check_request.json"))
			var req authv3.CheckRequest
			if err := protojson.Unmarshal(raw, &req); err != nil {
				b.Fatal(err)
			}
			req.Attributes.Request.Http.Headers["authorization"] = "Bearer " + key
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(16) // concurrent callers, as Envoy's connection carries many
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if resp, err := client.Check(ctx, &req); err != nil || resp.GetOkResponse() == nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

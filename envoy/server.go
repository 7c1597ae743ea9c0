package envoy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	lru "github.com/hashicorp/golang-lru/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/usage"
)

// Headers keygate sets on allowed requests, for the upstream.
const (
	HeaderKeyID     = "x-api-key-id"
	HeaderKeyName   = "x-api-key-name"
	HeaderKeyScopes = "x-api-key-scopes"
	HeaderRequestID = "x-request-id"
)

// Credential headers, removed from allowed requests unless Options.KeepCredentials.
const (
	headerAuthorization = "authorization"
	headerAPIKey        = "x-api-key"
	// headerPartialBody is Envoy's flag for a body cut at max_request_bytes.
	headerPartialBody = "x-envoy-auth-partial-body"
	headerXFCC        = "x-forwarded-client-cert"
	headerClientCert  = "client-cert" // RFC 9440
)

// peer verifies the client certificate Envoy saw (URL-escaped PEM) and, when that
// client is a trusted front proxy, the certificate named by the one header that proxy
// sets. The other forwarding header is ignored: a proxy that sanitizes its own header
// knows nothing of the other, so a client could have written it.
func (s *Server) peer(escapedPEM string, fwd forwarded) authz.Peer {
	if escapedPEM == "" {
		return authz.Peer{}
	}
	p := s.verified(escapedPEM, func() ([]byte, error) { return certs.DecodeEnvoyPEM(escapedPEM) })
	if !p.Verified || (fwd.xfcc == "" && fwd.clientCert == "") {
		return p
	}
	switch s.trustedProxy(&p) {
	case ForwardXFCC:
		if fwd.xfcc == "" {
			return p
		}
		return s.verified(fwd.xfcc, func() ([]byte, error) {
			els, err := certs.ParseXFCC(fwd.xfcc)
			if err != nil {
				return nil, err
			}
			return els[len(els)-1].CertDER() // the element the nearest proxy appended
		})
	case ForwardClientCert:
		if fwd.clientCert == "" {
			return p
		}
		return s.verified(fwd.clientCert, func() ([]byte, error) { return certs.ParseClientCert(fwd.clientCert) })
	}
	return p
}

// verified returns the peer for a certificate as sent, from the cache or by decoding
// and verifying it. A certificate that cannot be decoded or verified is a presented,
// unverified peer.
func (s *Server) verified(sent string, decode func() ([]byte, error)) authz.Peer {
	verifier := s.verifier()
	if verifier == nil {
		return authz.Peer{Presented: true}
	}
	k := sha256.Sum256([]byte(sent))
	if v, ok := s.peers.Get(k); ok && v.by == verifier && time.Now().Before(v.notAfter) {
		return v.peer
	}
	der, err := decode()
	if err != nil {
		return authz.Peer{Presented: true}
	}
	id, err := verifier.Verify(der)
	if err != nil {
		return authz.Peer{Presented: true}
	}
	p := authz.VerifiedPeer(id)
	s.peers.Add(k, verifiedPeer{peer: p, notAfter: id.NotAfter, by: verifier})
	return p
}

// trustedProxy returns the header the first trusted proxy entry matching the verified
// peer sets, or "" when the peer is no trusted proxy.
func (s *Server) trustedProxy(p *authz.Peer) string {
	for _, t := range s.trusted {
		if t.ID == p.Fingerprint || slices.ContainsFunc(p.SPIFFE, func(id string) bool { return certs.MatchSPIFFE(t.ID, id) }) {
			return t.Header
		}
	}
	return ""
}

// The forwarding headers a trusted proxy may set.
const (
	ForwardXFCC       = headerXFCC       // Envoy's x-forwarded-client-cert
	ForwardClientCert = headerClientCert // RFC 9440 Client-Cert
)

// TrustedProxy is a front proxy whose forwarded client certificate keygate believes:
// its own verified certificate (ID: a SPIFFE ID pattern or a sha256: fingerprint) and
// the one header it sets, ForwardXFCC or ForwardClientCert. The proxy must remove that
// header from the requests its clients send.
type TrustedProxy struct {
	ID     string `json:"id"`
	Header string `json:"header"`
}

// UnmarshalJSON accepts an object, or a bare ID meaning a proxy that sets
// x-forwarded-client-cert (as Envoy does).
func (t *TrustedProxy) UnmarshalJSON(b []byte) error {
	var id string
	if err := json.Unmarshal(b, &id); err == nil {
		*t = TrustedProxy{ID: id, Header: ForwardXFCC}
		return nil
	}
	type plain TrustedProxy
	var v plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("a trusted proxy is an id, or {id, header}: %w", err)
	}
	*t = TrustedProxy(v)
	if t.Header == "" {
		t.Header = ForwardXFCC
	}
	return nil
}

// Validate checks the entry.
func (t TrustedProxy) Validate() error {
	if t.ID == "" || !(strings.HasPrefix(t.ID, "spiffe://") || strings.HasPrefix(t.ID, "sha256:")) {
		return fmt.Errorf("trusted proxy %q: the id is a SPIFFE ID pattern or sha256:<fingerprint>", t.ID)
	}
	if h := strings.ToLower(t.Header); h != ForwardXFCC && h != ForwardClientCert {
		return fmt.Errorf("trusted proxy %s: header %q: want %s or %s", t.ID, t.Header, ForwardXFCC, ForwardClientCert)
	}
	return nil
}

// Options configures a Server.
type Options struct {
	// KeepCredentials forwards the Authorization and X-API-Key headers to the upstream.
	// The zero value removes them, so the upstream never sees a key.
	KeepCredentials bool
	// Logger receives one line per denial (info), per allow (debug) and per request
	// that could not be decided (warn). nil discards them.
	Logger *slog.Logger
	// Audit receives an auth.failed (or key.expired_on_use) event per denial; nil: none.
	Audit *audit.Log
	// Usage is told of every allowed key, to record its last use; nil: not recorded.
	Usage UsageRecorder
	// Limits rate-limits allowed keys; nil: no limits.
	Limits RateLimiter
	// LimiterFailOpen allows requests when Limits cannot answer (Redis down); otherwise
	// they are denied with a 503.
	LimiterFailOpen bool
	// PerKeyMetrics adds a keygate.key.checks series per key id: off by default, as it
	// makes one series per key.
	PerKeyMetrics bool
	// ClientCerts returns the verifier for the client certificate Envoy forwards in
	// attributes.source.certificate (include_peer_certificate): a function, so that a
	// reloaded CA bundle or CRL applies at once. nil: certificates are ignored.
	ClientCerts func() *certs.Verifier
	// TrustForwardedFrom lists the front proxies whose forwarded client certificate
	// names the real client, each with the one header it sets. Empty: forwarding headers
	// are ignored.
	TrustForwardedFrom []TrustedProxy
	// Counter counts every check for usage analytics; nil: not counted.
	Counter Counter
}

// RateLimiter counts a request against a key's limits; *ratelimit.Limiter is one.
type RateLimiter interface {
	Check(ctx context.Context, rec *authz.Record) (res ratelimit.Result, applied bool, err error)
}

// UsageRecorder remembers when keys were used. It must not block: it runs on every
// allowed check.
type UsageRecorder interface {
	Seen(id string, at time.Time)
}

// Server answers Envoy's ext_authz Check calls with the decisions of an authz.Engine.
type Server struct {
	engine   *authz.Engine
	remove   []string
	log      *slog.Logger
	audit    *audit.Log
	usage    UsageRecorder
	limits   RateLimiter
	failOpen bool
	metrics  *metrics
	verifier func() *certs.Verifier
	trusted  []TrustedProxy
	counter  Counter
	peers    *lru.Cache[[32]byte, verifiedPeer] // by SHA-256 of the certificate as sent
	views    *recordViews                       // the record-only parts of allowed answers
	// removeWire is remove as OkHttpResponse.headers_to_remove, encoded.
	removeWire []byte
}

// verifiedPeer is a cached verification: the peer, valid until notAfter, by the
// verifier that checked it (a reloaded CA bundle or CRL makes a new one).
type verifiedPeer struct {
	peer     authz.Peer
	notAfter time.Time
	by       *certs.Verifier
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// NewServer returns a Server deciding with engine. Its metrics go to the global OTel
// MeterProvider.
func NewServer(engine *authz.Engine, opts Options) (*Server, error) {
	m, err := newMetrics(opts.PerKeyMetrics)
	if err != nil {
		return nil, err
	}
	for i, t := range opts.TrustForwardedFrom {
		if err := t.Validate(); err != nil {
			return nil, err
		}
		opts.TrustForwardedFrom[i].Header = strings.ToLower(t.Header)
	}
	s := &Server{engine: engine, log: opts.Logger, audit: opts.Audit, usage: opts.Usage,
		limits: opts.Limits, failOpen: opts.LimiterFailOpen, metrics: m,
		verifier: opts.ClientCerts, trusted: opts.TrustForwardedFrom, views: newRecordViews(), counter: opts.Counter}
	if s.verifier != nil {
		// Verifying a chain costs far more than a check; a client sends the same
		// certificate on every request.
		if s.peers, err = lru.New[[32]byte, verifiedPeer](10_000); err != nil {
			return nil, err
		}
	}
	if !opts.KeepCredentials {
		s.remove = []string{headerAuthorization, headerAPIKey}
	}
	s.removeWire = encodeRemove(s.remove)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// Register registers the Authorization service on g. With the Codec option on g,
// allowed answers are encoded from their prebuilt parts.
func (s *Server) Register(g *grpc.Server) { g.RegisterService(&authorizationDesc, s) }

// Check implements envoy.service.auth.v3.Authorization/Check. Denials are responses; the
// error is non-nil only when keygate could not decide, and Envoy then applies the
// filter's status_on_error.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	in := inputOf(req)
	resp, err := s.answerInput(ctx, &in)
	switch r := resp.(type) {
	case *allowedResponse:
		return &r.CheckResponse, nil
	case *authv3.CheckResponse:
		return r, err
	}
	return nil, err
}

// answer is Check for the gRPC handler: an allowed answer is an *allowedResponse, the
// others an *authv3.CheckResponse; nil with the error when keygate could not decide.
func (s *Server) answer(ctx context.Context, req *authv3.CheckRequest) (any, error) {
	in := inputOf(req)
	return s.answerInput(ctx, &in)
}

// answerInput is answer for what a check reads of the request.
func (s *Server) answerInput(ctx context.Context, in *checkInput) (any, error) {
	start := time.Now()
	d, resp, err := s.check(ctx, in, start)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		// Decision and reason, never key material, on the Check span.
		span.SetAttributes(attribute.String("keygate.decision", decisionOf(d.Reason)),
			attribute.String("keygate.reason", d.Reason.String()))
	}
	s.metrics.record(ctx, &d, start)
	if s.counter != nil {
		s.count(&d, start)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// count tells the Counter of d: the usage aggregator by a direct call, which keeps
// the decision on the stack; another Counter is given a copy.
func (s *Server) count(d *authz.Decision, at time.Time) {
	if a, ok := s.counter.(*usage.Aggregator); ok {
		a.Count(d, at)
		return
	}
	c := *d
	s.counter.Count(&c, at)
}

// check decides req and builds the answer (an *allowedResponse or an
// *authv3.CheckResponse); answer observes it. start is when the check began.
func (s *Server) check(ctx context.Context, in *checkInput, start time.Time) (authz.Decision, any, error) {
	areq := in.req
	if s.verifier != nil {
		areq.Peer = s.peer(in.cert, in.fwd)
	}
	areq.Source.Addr = in.addr
	if areq.Peer.Verified {
		areq.Source.Fingerprint = areq.Peer.Fingerprint
	}
	d, err := s.engine.Check(ctx, &areq)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "check undecided",
			slog.String("request_id", d.RequestID), slog.String("error", err.Error()))
		if errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled) {
			return d, nil, status.Error(codes.Canceled, "check canceled")
		}
		return d, nil, status.Error(codes.Unavailable, "keygate could not decide")
	}
	var rl *ratelimit.Result
	var res ratelimit.Result
	if d.Allowed() && s.limits != nil {
		var limited bool
		if d, res, limited = s.limit(ctx, d); limited {
			rl = &res
		}
	}
	if !d.Allowed() {
		if s.log.Enabled(ctx, slog.LevelInfo) {
			attrs := []slog.Attr{slog.String("request_id", d.RequestID), slog.String("reason", d.Reason.String()),
				slog.Int("status", d.Denial.Status)}
			if d.Record.ID != "" { // revoked or expired: the key is known by its id
				attrs = append(attrs, slog.String("key_id", d.Record.ID))
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "denied", attrs...)
		}
		if s.audit != nil {
			ev := audit.Event{Event: audit.AuthFailed, Reason: d.Reason.String(), Status: d.Denial.Status,
				KeyID: d.KeyID, Owner: d.Owner, RequestID: d.RequestID, Source: in.source()}
			if d.Reason == authz.ReasonExpired {
				ev.Event = audit.KeyExpiredOnUse
			}
			s.audit.Write(ev)
		}
		return d, denied(&d, rl), nil
	}
	if s.usage != nil && d.Record.Kind != authz.KindCertificate { // certificates have no key record
		s.usage.Seen(d.Record.ID, start)
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "allowed",
			slog.String("request_id", d.RequestID), slog.String("reason", d.Reason.String()), slog.String("key_id", d.Record.ID))
	}
	return d, s.allowed(&d, rl), nil
}

// limit counts an allowed request against the key's rate limits. limited is false
// when no limit applies.
func (s *Server) limit(ctx context.Context, d authz.Decision) (_ authz.Decision, _ ratelimit.Result, limited bool) {
	var res ratelimit.Result
	var applied bool
	var err error
	if l, ok := s.limits.(*ratelimit.Limiter); ok {
		// A direct call, which keeps d on the stack.
		res, applied, err = l.Check(ctx, &d.Record)
	} else {
		rec := d.Record
		res, applied, err = s.limits.Check(ctx, &rec)
	}
	switch {
	case err != nil && s.failOpen:
		s.metrics.limiterDown.Add(ctx, 1, s.metrics.failOpen)
		s.log.LogAttrs(ctx, slog.LevelWarn, "rate limiter unavailable; allowing (fail open)",
			slog.String("request_id", d.RequestID), slog.String("error", err.Error()))
		return d, res, false
	case err != nil:
		s.metrics.limiterDown.Add(ctx, 1, s.metrics.failClosed)
		s.log.LogAttrs(ctx, slog.LevelWarn, "rate limiter unavailable; denying (fail closed)",
			slog.String("request_id", d.RequestID), slog.String("error", err.Error()))
		return s.engine.LimiterUnavailable(d), res, false
	case !applied:
		return d, res, false
	case !res.Allowed:
		s.metrics.rateLimited.Add(ctx, 1)
		return s.engine.RateLimited(d, res.RetryAfter), res, true
	}
	return d, res, true
}

// rateHeaders sets the X-RateLimit-* headers for the client in hs, and returns how
// many it set: none when rl is nil.
func rateHeaders(hs *[3]header, rl *ratelimit.Result) int {
	if rl == nil {
		return 0
	}
	reset := int((rl.ResetAfter + time.Second - 1) / time.Second)
	hs[0].set("x-ratelimit-limit", strconv.Itoa(rl.Limit))
	hs[1].set("x-ratelimit-remaining", strconv.Itoa(rl.Remaining))
	hs[2].set("x-ratelimit-reset", strconv.Itoa(reset))
	return len(hs)
}

// source is the client's address as Envoy saw it ("ip:port"), for the audit log.
func (in *checkInput) source() string {
	if !in.socket {
		return ""
	}
	return net.JoinHostPort(in.addr, strconv.FormatUint(uint64(in.port), 10))
}

// requestFrom reads the credential headers from both places Envoy may put them: the
// headers map, or header_map when the filter sets encode_raw_headers. Names are matched
// case-insensitively; repeated headers are joined with "," as HTTP merges them.
func requestFrom(h *authv3.AttributeContext_HttpRequest) (authz.Request, forwarded) {
	r := authz.Request{Method: h.GetMethod(), Host: h.GetHost(), Path: h.GetPath()}
	var fwd forwarded
	switch {
	case len(h.GetRawBody()) > 0: // pack_as_bytes
		r.Body = h.GetRawBody()
	case h.GetBody() != "":
		r.Body = []byte(h.GetBody())
	}
	for k, v := range h.GetHeaders() {
		collect(&r, &fwd, k, v)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		collect(&r, &fwd, hv.GetKey(), v)
	}
	return r, fwd
}

// forwarded holds a front proxy's client certificate headers.
type forwarded struct {
	xfcc, clientCert string
}

// collect keeps value when name is one of the headers a check reads, in any case.
// Names are told apart by length first (most of a request's headers match none), then
// by exact lower-case comparison (Envoy sends lower case), then case-insensitively. An
// equal-length EqualFold is an ASCII case-insensitive match: every non-ASCII rune that
// folds to ASCII is longer than it.
func collect(r *authz.Request, fwd *forwarded, name, value string) {
	dst, partial := target(r, fwd, name)
	switch {
	case partial:
		r.BodyPartial = value == "true"
	case dst == nil:
	case *dst == "":
		*dst = value
	default:
		*dst += "," + value
	}
}

// target is where collect keeps the value of the header name: a field of r or fwd, or
// the partial-body flag; nil and false for a header no check reads.
func target(r *authz.Request, fwd *forwarded, name string) (dst *string, partial bool) {
	switch len(name) {
	case len(headerAPIKey): // and forwarded
		if dst = pick(name, headerAPIKey, &r.APIKey); dst == nil {
			dst = pick(name, "forwarded", &r.Forwarded)
		}
	case len(headerClientCert):
		dst = pick(name, headerClientCert, &fwd.clientCert)
	case len(HeaderRequestID): // and content-type
		if dst = pick(name, HeaderRequestID, &r.RequestID); dst == nil {
			dst = pick(name, "content-type", &r.ContentType)
		}
	case len(headerAuthorization): // and x-http-method
		if dst = pick(name, headerAuthorization, &r.Authorization); dst == nil {
			dst = pickOverride(name, "x-http-method", &r.MethodOverride)
		}
	case len("x-method-override"):
		dst = pickOverride(name, "x-method-override", &r.MethodOverride)
	case len("x-http-method-override"):
		dst = pickOverride(name, "x-http-method-override", &r.MethodOverride)
	case len("x-forwarded-host"):
		dst = pick(name, "x-forwarded-host", &r.ForwardedHost)
	case len(headerXFCC):
		dst = pick(name, headerXFCC, &fwd.xfcc)
	case len(headerPartialBody):
		partial = name == headerPartialBody || strings.EqualFold(name, headerPartialBody)
	}
	return dst, partial
}

// pick returns dst when name, as long as lower (a lower-case header name), is lower in
// any case.
func pick(name, lower string, dst *string) *string {
	if name == lower || name[0]|0x20 == lower[0] && strings.EqualFold(name, lower) {
		return dst
	}
	return nil
}

// pickOverride is pick for a method override header, whose name CGI, WSGI and Rack
// servers also read with '_' for '-' (X_HTTP_Method_Override).
func pickOverride(name, lower string, dst *string) *string {
	if authz.SameHeaderName(name, lower) {
		return dst
	}
	return nil
}

// NeedsBody reports whether a request to method, host and path is on a route that checks
// the body's model; the terminator reads the body before deciding only then.
func (s *Server) NeedsBody(method, host, path, contentType string) bool {
	return s.engine.NeedsBody(method, host, path, contentType)
}

// allowedResponse is every message of one allowed answer, in one allocation (the
// rate-limit headers, when a plan applies, in a second). What depends only on the key's
// record comes from a recordView. It is the CheckResponse it embeds (a proto.Message),
// and also knows its own bytes (codec.go): the view's and the server's prebuilt parts,
// and the request id and rate-limit headers of this check.
type allowedResponse struct {
	authv3.CheckResponse
	ok       authv3.CheckResponse_OkResponse
	okHTTP   authv3.OkHttpResponse
	reqID    [2]header // upstream, client
	upstream [4]*corev3.HeaderValueOption
	client   [7]*corev3.HeaderValueOption

	view      *recordView
	requestID string
	remove    []byte     // the server's headers to remove, encoded
	rate      *[3]header // the rate-limit headers, nrate of them
	nrate     int
}

// statusOK is the status of every allowed answer; never modified.
var statusOK = &rpcstatus.Status{Code: int32(codes.OK)}

// clientRequestID is the request id header for the client.
const clientRequestID = "X-Request-ID"

func (s *Server) allowed(d *authz.Decision, rl *ratelimit.Result) *allowedResponse {
	v := s.views.get(&d.Record)
	a := &allowedResponse{view: v, requestID: d.RequestID, remove: s.removeWire}
	// The client sees who it is (AI Magicx's "security metadata") and its rate limit.
	client := a.client[:0]
	if rl != nil {
		a.rate = new([3]header)
		a.nrate = rateHeaders(a.rate, rl)
		for i := range a.nrate {
			client = append(client, &a.rate[i].opt)
		}
	}
	client = append(client, v.client[0], v.client[1], v.client[2], a.reqID[1].set(clientRequestID, d.RequestID))
	a.upstream = [4]*corev3.HeaderValueOption{v.upstream[0], v.upstream[1], v.upstream[2],
		a.reqID[0].set(HeaderRequestID, d.RequestID)}
	a.okHTTP.Headers = a.upstream[:]
	a.okHTTP.HeadersToRemove = s.remove
	a.okHTTP.ResponseHeadersToAdd = client
	a.ok.OkResponse = &a.okHTTP
	a.Status = statusOK
	a.HttpResponse = &a.ok
	a.DynamicMetadata = v.metadata
	return a
}

// deniedResponse is every message of one denial, in one allocation.
type deniedResponse struct {
	resp    authv3.CheckResponse
	status  rpcstatus.Status
	denied  authv3.CheckResponse_DeniedResponse
	http    authv3.DeniedHttpResponse
	code    typev3.HttpStatus
	hs      [4]header
	rate    [3]header
	headers [7]*corev3.HeaderValueOption
}

func denied(d *authz.Decision, rl *ratelimit.Result) *authv3.CheckResponse {
	r := new(deniedResponse)
	headers := r.headers[:0]
	for i := range rateHeaders(&r.rate, rl) {
		headers = append(headers, &r.rate[i].opt)
	}
	headers = append(headers, r.hs[0].set("content-type", "application/json"))
	if d.Denial.WWWAuthenticate != "" {
		headers = append(headers, r.hs[1].set("www-authenticate", d.Denial.WWWAuthenticate))
	}
	if d.Denial.RetryAfter != "" {
		headers = append(headers, r.hs[2].set("retry-after", d.Denial.RetryAfter))
	}
	headers = append(headers, r.hs[3].set(HeaderRequestID, d.RequestID))
	r.status.Code = int32(grpcCode(d.Denial.Status))
	r.code.Code = typev3.StatusCode(d.Denial.Status)
	r.http.Status = &r.code
	r.http.Headers = headers
	r.http.Body = d.Denial.Body
	r.denied.DeniedResponse = &r.http
	r.resp.Status = &r.status
	r.resp.HttpResponse = &r.denied
	return &r.resp
}

// grpcCode is the CheckResponse status for a denial's HTTP status.
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusForbidden:
		return codes.PermissionDenied
	default:
		return codes.PermissionDenied
	}
}

// header is one header option with its value, allocated together.
type header struct {
	opt corev3.HeaderValueOption
	hv  corev3.HeaderValue
}

// set makes h the header key: value, replacing any the request or response has, and
// returns its option.
func (h *header) set(key, value string) *corev3.HeaderValueOption {
	h.hv.Key, h.hv.Value = key, value
	h.opt.Header = &h.hv
	h.opt.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	return &h.opt
}

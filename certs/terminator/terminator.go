// Package terminator is keygate without Envoy: a TLS listener that requires client
// certificates, decides every request with the same ext_authz Check an Envoy would call
// (keys, scopes, models, certificates, rate limits, audit, metrics), answers denials
// itself, and reverse-proxies allowed requests to one upstream with streaming, HTTP/2
// towards the client and WebSocket upgrades intact.
//
// The upstream request is built in one place, the reverse proxy's Rewrite, after the
// hop-by-hop headers (and whatever the client's Connection header names) are gone:
//   - removed: every client header whose name, folded to lower case with '_' read as
//     '-', is one keygate sets (x-api-key-id, x-api-key-name, x-api-key-scopes,
//     x-request-id, x-forwarded-client-cert, client-cert, forwarded, x-forwarded-for,
//     -host, -proto); the credential headers the Check names in headers_to_remove
//     (authorization and x-api-key unless keep_credentials), in any case; credential
//     headers spelt with '_' always (the check never read them); all request trailers.
//   - set: the Check's identity headers, an x-forwarded-client-cert describing the
//     verified client certificate (every value quoted), and X-Forwarded-For/-Host/-Proto.
//
// Requests asking to switch to h2c (Upgrade: h2c, or an HTTP2-Settings header) are
// refused with a 400. The Check sees the body only when the Checker says the route
// needs it (BodyChecker); that read is bounded by Config.BodyTimeout.
//
// Denials are the Check's own answers. What the terminator refuses itself (h2c, a body
// that cannot be read or comes too slowly, a failed check, an unreachable upstream) is
// answered in the configured deny profile's envelope (authz.Profile.Answer), with
// Content-Type application/json and an X-Request-Id.
package terminator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/certs"
)

// Checker decides a request the way Envoy's ext_authz filter asks; *envoy.Server is one.
type Checker interface {
	Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

// BodyChecker is a Checker that can tell from the request line and Content-Type whether
// its decision reads the body (a model check, or a form whose _method field overrides
// the method). When the Checker does not implement it, the body is always read (up to
// MaxBody) before the check.
type BodyChecker interface {
	NeedsBody(method, host, path, contentType string) bool
}

// Config configures a Terminator.
type Config struct {
	Upstream *url.URL // where allowed requests go (http or https)
	Checker  Checker
	// MaxBody is how much of a request body the check sees (model routes), as Envoy's
	// with_request_body max_request_bytes; 0 means 64 KiB. The upstream gets it all.
	MaxBody int64
	// BodyTimeout bounds the time, counted from the end of the headers, the client has
	// to send the part of the body the check sees; a client slower than that gets a 408
	// and the connection is closed. 0 means 5 s. It does not bound the rest of the body,
	// which streams to the upstream once the request is allowed.
	BodyTimeout time.Duration
	// Transport carries allowed requests to the upstream; nil means NewTransport(nil),
	// with bodiless GET, HEAD and OPTIONS requests to an http upstream carried in the
	// handler's own goroutine over a pool of the same size (upstreamTransport).
	Transport http.RoundTripper
	// Profile shapes the answers the terminator writes itself, as the Check's denials
	// are shaped (deny_profile); the zero value is the default profile.
	Profile authz.Profile
	Logger  *slog.Logger
}

// Terminator is the HTTP handler behind the TLS listener.
type Terminator struct {
	cfg     Config
	proxy   *httputil.ReverseProxy
	peers   *lru.Cache[*x509.Certificate, *peerInfo]
	answers []authz.Denial // by authz.Answer
}

// peerInfo is what the terminator writes about a client certificate, computed once per
// parsed certificate (every request of a connection shares it).
type peerInfo struct {
	escapedPEM string   // Envoy's URL-escaped PEM, for the CheckRequest and XFCC's Cert
	xfcc       []string // the header's value; shared by requests, never modified
}

// ownedHeaders are set by keygate only: any client header that folds to one of them is
// removed.
var ownedHeaders = []string{
	"x-api-key-id", "x-api-key-name", "x-api-key-scopes", "x-request-id",
	"x-forwarded-client-cert", "client-cert",
	"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
}

// credentialHeaders carry API keys: their '_' spellings never reach the upstream.
var credentialHeaders = []string{"authorization", "x-api-key"}

// NewTransport returns the transport to the upstream: a keep-alive pool sized for a busy
// terminator (idle connections are reused instead of a new one per request), HTTP/2
// towards https upstreams that offer it, and bounded connect and handshake times. It
// uses no proxy from the environment, and passes the client's Accept-Encoding as it is
// (it neither asks the upstream for gzip nor decompresses). tlsConf may be nil (the
// system roots).
func NewTransport(tlsConf *tls.Config) *http.Transport {
	return &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   5 * time.Second,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          0, // no overall cap: there is one upstream
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// No ResponseHeaderTimeout: a model may think for minutes before its first byte.
	}
}

// New returns a Terminator.
func New(cfg Config) *Terminator {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.BodyTimeout == 0 {
		cfg.BodyTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Transport == nil {
		cfg.Transport = newUpstreamTransport(NewTransport(nil))
	}
	peers, _ := lru.New[*x509.Certificate, *peerInfo](4096)
	t := &Terminator{cfg: cfg, peers: peers}
	for _, a := range authz.Answers() {
		t.answers = append(t.answers, cfg.Profile.Answer(a))
	}
	t.proxy = &httputil.ReverseProxy{
		Rewrite:      t.rewrite,
		Transport:    cfg.Transport,
		BufferPool:   buffers{},
		ErrorHandler: t.proxyError,
		// 0: responses of unknown length (streams) and text/event-stream are flushed on
		// every write by the proxy itself; fixed-length ones go out in one write at the
		// end instead of a header write, a timer goroutine and a flush per write.
		FlushInterval: 0,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return t
}

// buffers recycles the 32 KiB buffers the proxy copies response bodies through, which
// it would otherwise allocate for every request.
type buffers struct{}

var bufferPool = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (buffers) Get() []byte { return bufferPool.Get().(*[32 << 10]byte)[:] }

func (buffers) Put(b []byte) {
	if cap(b) == 32<<10 {
		bufferPool.Put((*[32 << 10]byte)(b[:32<<10]))
	}
}

// allowance is what an allowed request carries from the check to rewrite.
type allowance struct {
	ok   *authv3.OkHttpResponse
	peer *peerInfo
}

type allowanceKey struct{}

// ServeHTTP checks the request and proxies it, or answers the denial.
func (t *Terminator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if wantsH2C(r.Header) {
		t.refuse(w, r, authz.AnswerUpgradeRefused)
		return
	}
	target := normalize(r)
	peer := t.peer(r)
	req, err := t.checkRequest(w, r, target, peer)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.refuse(w, r, authz.AnswerBodyTimeout)
			return
		}
		t.refuse(w, r, authz.AnswerUnreadableBody)
		return
	}
	resp, err := t.cfg.Checker.Check(r.Context(), req)
	if err != nil { // Envoy's status_on_error: never an allow
		t.refuse(w, r, authz.AnswerUnavailable)
		return
	}
	if d := resp.GetDeniedResponse(); d != nil {
		stopReading(w, r)
		setHeaders(w.Header(), d.GetHeaders())
		w.WriteHeader(int(d.GetStatus().GetCode()))
		_, _ = io.WriteString(w, d.GetBody())
		return
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != 0 || ok == nil { // not an explicit allow: refuse
		t.refuse(w, r, authz.AnswerForbidden)
		return
	}
	setHeaders(w.Header(), ok.GetResponseHeadersToAdd())
	ctx := context.WithValue(r.Context(), allowanceKey{}, &allowance{ok: ok, peer: peer})
	t.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// normalize puts the request target in the form Envoy's normalize_path and
// merge_slashes give it (authz.NormalizeTarget), so the check and the upstream see one
// path. A target keygate finds ambiguous is left as it is: the check refuses it when
// the policy has routes, and without routes the path decides nothing. It returns the
// request target the check sees.
func normalize(r *http.Request) string {
	raw := r.URL.RequestURI()
	n, err := authz.NormalizeTarget(raw)
	if err != nil || n == raw {
		return raw
	}
	u, err := url.ParseRequestURI(n)
	if err != nil {
		return raw
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	return r.URL.RequestURI()
}

// rewrite builds the upstream request. It runs after the reverse proxy removed the
// hop-by-hop headers and those the client's Connection header named, so nothing set
// here can be stripped by the client.
func (t *Terminator) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(t.cfg.Upstream)
	pr.Out.Host = pr.In.Host
	pr.Out.Trailer = nil // request trailers never reach the upstream
	a, _ := pr.In.Context().Value(allowanceKey{}).(*allowance)
	var remove []string
	if a != nil {
		remove = a.ok.GetHeadersToRemove()
	}
	h := pr.Out.Header
	for name := range h {
		if dropped(name, remove) {
			delete(h, name)
		}
	}
	setForwarded(h, pr.In)
	if a == nil { // only ServeHTTP proxies, always with an allowance
		return
	}
	setHeaders(h, a.ok.GetHeaders())
	if a.peer != nil {
		h["X-Forwarded-Client-Cert"] = a.peer.xfcc
	}
}

// setForwarded sets X-Forwarded-For, -Host and -Proto as ProxyRequest.SetXForwarded
// does on a request that had none (the client's were dropped), in one allocation.
func setForwarded(h http.Header, in *http.Request) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	vals := []string{"", in.Host, proto}
	if ip, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		vals[0] = ip
		h["X-Forwarded-For"] = vals[0:1:1]
	}
	h["X-Forwarded-Host"] = vals[1:2:2]
	h["X-Forwarded-Proto"] = vals[2:3:3]
}

// dropped reports whether a client header must not reach the upstream: it folds to a
// header keygate sets, to one the check says to remove, or to a credential header
// spelt with '_'.
func dropped(name string, remove []string) bool {
	for _, o := range ownedHeaders {
		if authz.SameHeaderName(name, o) {
			return true
		}
	}
	for _, o := range remove {
		if authz.SameHeaderName(name, o) {
			return true
		}
	}
	if strings.IndexByte(name, '_') >= 0 {
		for _, o := range credentialHeaders {
			if authz.SameHeaderName(name, o) {
				return true
			}
		}
	}
	return false
}

// wantsH2C reports a request to switch to cleartext HTTP/2, which has no place on a
// TLS connection and would let the client talk to the upstream unchecked.
func wantsH2C(h http.Header) bool {
	for name, vs := range h {
		if authz.SameHeaderName(name, "http2-settings") {
			return true
		}
		if !authz.SameHeaderName(name, "upgrade") {
			continue
		}
		for _, v := range vs {
			for _, tok := range strings.Split(v, ",") {
				tok = strings.TrimSpace(tok)
				if i := strings.IndexByte(tok, '/'); i >= 0 {
					tok = tok[:i]
				}
				if strings.EqualFold(tok, "h2c") {
					return true
				}
			}
		}
	}
	return false
}

// refuse answers a request the terminator itself turns down, in the deny profile's
// envelope.
func (t *Terminator) refuse(w http.ResponseWriter, r *http.Request, a authz.Answer) {
	stopReading(w, r)
	d := t.answers[a]
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	if len(h["X-Request-Id"]) == 0 { // the check's, when it allowed the request
		h["X-Request-Id"] = []string{authz.NewRequestID()}
	}
	if d.RetryAfter != "" {
		h["Retry-After"] = []string{d.RetryAfter}
	}
	w.WriteHeader(d.Status)
	_, _ = io.WriteString(w, d.Body)
}

// proxyError answers an allowed request the upstream did not answer: a 502 in the
// deny profile's envelope, or nothing when the client is gone.
func (t *Terminator) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	t.cfg.Logger.LogAttrs(r.Context(), slog.LevelWarn, "upstream unavailable", slog.String("error", err.Error()))
	h := w.Header()
	for k := range h { // the client headers the check added for a success
		if k != "X-Request-Id" {
			delete(h, k)
		}
	}
	t.refuse(w, r, authz.AnswerBadGateway)
}

// stopReading makes an HTTP/1 server give up the rest of a request body at once before
// it answers: otherwise it would wait for up to 256 KiB of it, as slowly as the client
// cares to send, before the answer goes out. The connection is then closed unless the
// body had fully arrived. HTTP/2 streams need nothing: the answer ends the stream.
func stopReading(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && hasBody(r) {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// setHeaders sets each header of opts in h, replacing any of that name; the values
// share one allocation.
func setHeaders(h http.Header, opts []*corev3.HeaderValueOption) {
	if len(opts) == 0 {
		return
	}
	vals := make([]string, len(opts))
	for i, o := range opts {
		vals[i] = o.GetHeader().GetValue()
		h[canonicalName(o.GetHeader().GetKey())] = vals[i : i+1 : i+1]
	}
}

// canonicalNames are the canonical forms of the headers a Check sets, so that setting
// them does not allocate.
var canonicalNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"x-api-key-id", "x-api-key-name", "x-api-key-scopes", "x-request-id",
		"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "content-type",
		"www-authenticate", "retry-after"} {
		m[n] = http.CanonicalHeaderKey(n)
	}
	return m
}()

func canonicalName(k string) string {
	if c, ok := canonicalNames[k]; ok {
		return c
	}
	return http.CanonicalHeaderKey(k)
}

// checkRequest builds the CheckRequest Envoy would send for r: the connection's client
// certificate as URL-escaped PEM, the headers (lower case, repeated ones joined), and,
// when the check needs it, the body up to MaxBody, read within BodyTimeout. It puts the
// body back for the upstream.
func (t *Terminator) checkRequest(w http.ResponseWriter, r *http.Request, path string, peer *peerInfo) (*authv3.CheckRequest, error) {
	headers := make(map[string]string, len(r.Header)+4)
	for k, v := range r.Header {
		if len(v) == 1 {
			headers[lowerName(k)] = v[0]
		} else {
			headers[lowerName(k)] = strings.Join(v, ",")
		}
	}
	headers[":method"], headers[":path"], headers[":authority"], headers[":scheme"] = r.Method, path, r.Host, "https"
	m := new(checkMessages)
	h := &m.http
	h.Method, h.Path, h.Host, h.Scheme, h.Protocol, h.Headers, h.Size = r.Method, path, r.Host, "https", r.Proto, headers, r.ContentLength
	if hasBody(r) && t.needsBody(r.Method, r.Host, path, r.Header.Get("Content-Type")) {
		buf, err := t.readBody(w, r)
		if err != nil {
			return nil, err
		}
		// The upstream gets the whole body: what was read, then the rest.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		if int64(len(buf)) > t.cfg.MaxBody {
			buf = buf[:t.cfg.MaxBody]
			headers["x-envoy-auth-partial-body"] = "true"
		}
		h.RawBody = buf
	}
	src := &m.source
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		p, _ := strconv.ParseUint(port, 10, 16)
		m.port.PortValue = uint32(p)
		m.socket.Address, m.socket.PortSpecifier = host, &m.port
		m.sockAddr.SocketAddress = &m.socket
		m.addr.Address = &m.sockAddr
		src.Address = &m.addr
	}
	if peer != nil {
		src.Certificate = peer.escapedPEM
	}
	m.request.Http = h
	m.attrs.Source, m.attrs.Request = src, &m.request
	m.check.Attributes = &m.attrs
	return &m.check, nil
}

// checkMessages are the messages of one CheckRequest, allocated together.
type checkMessages struct {
	check    authv3.CheckRequest
	attrs    authv3.AttributeContext
	request  authv3.AttributeContext_Request
	http     authv3.AttributeContext_HttpRequest
	source   authv3.AttributeContext_Peer
	addr     corev3.Address
	sockAddr corev3.Address_SocketAddress
	socket   corev3.SocketAddress
	port     corev3.SocketAddress_PortValue
}

func (t *Terminator) needsBody(method, host, path, contentType string) bool {
	if bc, ok := t.cfg.Checker.(BodyChecker); ok {
		return bc.NeedsBody(method, host, path, contentType)
	}
	return true
}

// readBody reads up to MaxBody+1 bytes of the body within BodyTimeout.
func (t *Terminator) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	bounded := rc.SetReadDeadline(time.Now().Add(t.cfg.BodyTimeout)) == nil
	var b bytes.Buffer
	if n := r.ContentLength; n > 0 {
		b.Grow(int(min(n, t.cfg.MaxBody+1)))
	}
	_, err := b.ReadFrom(io.LimitReader(r.Body, t.cfg.MaxBody+1))
	if err != nil {
		return nil, err
	}
	if bounded {
		_ = rc.SetReadDeadline(time.Time{}) // the rest streams to the upstream
	}
	return b.Bytes(), nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// commonNames are the lower-case forms of the headers most requests carry, so that
// building the CheckRequest does not allocate for them.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"accept", "accept-encoding", "accept-language", "authorization", "cache-control",
		"connection", "content-length", "content-type", "cookie", "expect", "origin", "referer", "te",
		"traceparent", "tracestate", "user-agent", "x-api-key", "x-request-id", "openai-organization",
		"openai-project", "x-stainless-lang", "x-stainless-package-version", "x-stainless-os",
		"x-stainless-arch", "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-retry-count"} {
		m[http.CanonicalHeaderKey(n)] = n
	}
	return m
}()

func lowerName(k string) string {
	if l, ok := commonNames[k]; ok {
		return l
	}
	return strings.ToLower(k)
}

// peer returns what is written about the connection's client certificate, or nil.
func (t *Terminator) peer(r *http.Request) *peerInfo {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil
	}
	c := r.TLS.PeerCertificates[0]
	if p, ok := t.peers.Get(c); ok {
		return p
	}
	p := &peerInfo{escapedPEM: escapePEM(c.Raw)}
	p.xfcc = []string{xfcc(c, p.escapedPEM)}
	t.peers.Add(c, p)
	return p
}

// escapePEM is Envoy's URL-escaped PEM of a certificate.
func escapePEM(der []byte) string {
	return url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// xfcc describes a verified client certificate as Envoy's SANITIZE_SET does (Hash,
// Cert, Subject, URI, DNS), with every value quoted so that ',', ';', '=' in a SAN or
// subject cannot split it: Envoy's documented rule for XFCC values, applied to all of
// them, with '"' and '\' escaped by '\' (what certs.ParseXFCC reads back). Control
// characters, which no header value may carry, are written as %XX.
func xfcc(c *x509.Certificate, escapedPEM string) string {
	id := certs.IdentityOf(c)
	var b strings.Builder
	b.Grow(len(escapedPEM) + 256)
	sum := strings.TrimPrefix(id.Fingerprint, "sha256:")
	writeXFCC(&b, "Hash", sum)
	writeXFCC(&b, "Cert", escapedPEM)
	writeXFCC(&b, "Subject", c.Subject.String())
	for _, u := range id.URIs {
		writeXFCC(&b, "URI", u)
	}
	for _, d := range id.DNS {
		writeXFCC(&b, "DNS", d)
	}
	return b.String()
}

const hexDigits = "0123456789ABCDEF"

// writeXFCC appends key="value" to an XFCC element.
func writeXFCC(b *strings.Builder, key, v string) {
	if b.Len() > 0 {
		b.WriteByte(';')
	}
	b.WriteString(key)
	b.WriteString(`="`)
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

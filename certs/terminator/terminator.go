// Package terminator is keygate without Envoy: a TLS listener that requires client
// certificates, decides every request with the same ext_authz Check an Envoy would call
// (keys, scopes, models, certificates, rate limits, audit, metrics), answers denials
// itself, and reverse-proxies allowed requests to one upstream with streaming, HTTP/2
// towards the client and WebSocket upgrades intact.
//
// To the upstream it sends the identity headers (x-api-key-id, -name, -scopes,
// x-request-id) and an x-forwarded-client-cert describing the verified client
// certificate, after removing any such headers the client sent, and the credential
// headers unless configured to keep them.
package terminator

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/certs"
)

// Checker decides a request the way Envoy's ext_authz filter asks; *envoy.Server is one.
type Checker interface {
	Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

// Config configures a Terminator.
type Config struct {
	Upstream *url.URL // where allowed requests go (http or https)
	Checker  Checker
	// MaxBody is how much of a request body the check sees (model routes), as Envoy's
	// with_request_body max_request_bytes; 0 means 64 KiB. The upstream gets it all.
	MaxBody int64
	Logger  *slog.Logger
}

// Terminator is the HTTP handler behind the TLS listener.
type Terminator struct {
	cfg   Config
	proxy *httputil.ReverseProxy
}

// identityHeaders are set by keygate only: copies the client sent are removed.
var identityHeaders = []string{"x-api-key-id", "x-api-key-name", "x-api-key-scopes", "x-forwarded-client-cert", "client-cert"}

// New returns a Terminator.
func New(cfg Config) *Terminator {
	if cfg.MaxBody == 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	t := &Terminator{cfg: cfg}
	t.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(cfg.Upstream)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1, // stream: every write of the upstream reaches the client at once
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return t
}

// ServeHTTP checks the request and proxies it, or answers the denial.
func (t *Terminator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req, err := t.checkRequest(r)
	if err != nil {
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	resp, err := t.cfg.Checker.Check(r.Context(), req)
	if err != nil { // Envoy's status_on_error: never an allow
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":"authorization unavailable"}`)
		return
	}
	if d := resp.GetDeniedResponse(); d != nil {
		setHeaders(w.Header(), d.GetHeaders())
		w.WriteHeader(int(d.GetStatus().GetCode()))
		_, _ = io.WriteString(w, d.GetBody())
		return
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != 0 || ok == nil { // not an explicit allow: refuse
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	for _, h := range identityHeaders {
		r.Header.Del(h)
	}
	for _, h := range ok.GetHeadersToRemove() {
		r.Header.Del(h)
	}
	setHeaders(r.Header, ok.GetHeaders())
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		r.Header.Set("X-Forwarded-Client-Cert", xfcc(r))
	}
	setHeaders(w.Header(), ok.GetResponseHeadersToAdd())
	t.proxy.ServeHTTP(w, r)
}

func setHeaders(h http.Header, opts []*corev3.HeaderValueOption) {
	for _, o := range opts {
		h.Set(o.GetHeader().GetKey(), o.GetHeader().GetValue())
	}
}

// checkRequest builds the CheckRequest Envoy would send for r: the connection's client
// certificate as URL-escaped PEM, the headers (lower case, repeated ones joined), and
// the body up to MaxBody. It puts the body back for the upstream.
func (t *Terminator) checkRequest(r *http.Request) (*authv3.CheckRequest, error) {
	headers := make(map[string]string, len(r.Header)+4)
	for k, v := range r.Header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	headers[":method"], headers[":path"], headers[":authority"], headers[":scheme"] = r.Method, r.URL.RequestURI(), r.Host, "https"
	h := &authv3.AttributeContext_HttpRequest{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host,
		Scheme: "https", Protocol: r.Proto, Headers: headers, Size: r.ContentLength}
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := io.ReadAll(io.LimitReader(r.Body, t.cfg.MaxBody+1))
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
	src := &authv3.AttributeContext_Peer{}
	if host, port, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		p, _ := strconv.ParseUint(port, 10, 32)
		src.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		src.Certificate = escapePEM(r.TLS.PeerCertificates[0].Raw)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  src,
		Request: &authv3.AttributeContext_Request{Http: h},
	}}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// escapePEM is Envoy's URL-escaped PEM of a certificate.
func escapePEM(der []byte) string {
	return url.PathEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
}

// xfcc describes the verified client certificate in Envoy's format.
func xfcc(r *http.Request) string {
	c := r.TLS.PeerCertificates[0]
	id := certs.IdentityOf(c)
	var b strings.Builder
	b.WriteString("Hash=" + strings.TrimPrefix(id.Fingerprint, "sha256:"))
	b.WriteString(`;Cert="` + escapePEM(c.Raw) + `"`)
	b.WriteString(`;Subject="` + strings.ReplaceAll(c.Subject.String(), `"`, `\"`) + `"`)
	for _, u := range id.URIs {
		b.WriteString(";URI=" + u)
	}
	for _, d := range id.DNS {
		b.WriteString(";DNS=" + d)
	}
	return b.String()
}

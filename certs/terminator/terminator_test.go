package terminator

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/certtest"
)

// answer is a Checker that returns one fixed response: the terminator's own logic is
// what is under test here (the real Check is tested end to end in cmd/keygate).
type answer struct{ resp *authv3.CheckResponse }

func (a answer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.resp, nil
}

// TestOnlyAnExplicitAllowPasses: a response that is neither a denial nor an OK with an
// ok_response must not reach the upstream.
func TestOnlyAnExplicitAllowPasses(t *testing.T) {
	reached := false
	up := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached = true }))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	for name, resp := range map[string]*authv3.CheckResponse{
		"empty":                   {},
		"error status, no denial": {Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}},
		"ok status, no response":  {Status: &rpcstatus.Status{Code: int32(codes.OK)}},
		"ok response, error status": {Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}},
	} {
		t.Run(name, func(t *testing.T) {
			reached = false
			rec := httptest.NewRecorder()
			New(Config{Upstream: u, Checker: answer{resp}}).ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
			body, _ := io.ReadAll(rec.Body)
			if reached || rec.Code != http.StatusForbidden {
				t.Fatalf("status %d, upstream reached %v: %s", rec.Code, reached, body)
			}
		})
	}
}

// TestXFCCRoundTrip: whatever a verified certificate holds, the XFCC keygate writes
// parses, with keygate's own parser, as one element giving back each value.
func TestXFCCRoundTrip(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	for name, o := range map[string]certtest.LeafOptions{
		"plain": {CommonName: "web", URIs: []string{"spiffe://example.org/ns/prod/sa/web"}, DNSNames: []string{"web.internal"}},
		"separators in a URI": {CommonName: "web", URIs: []string{
			"spiffe://example.org/ns/prod/sa/web,URI=spiffe://example.org/ns/prod/sa/billing",
			"spiffe://example.org/a;Hash=00;b=c", `spiffe://example.org/q"u\o`}},
		"separators in DNS":     {CommonName: "web", DNSNames: []string{"a,DNS=b.internal", "c;d=e", `f"g\h`, `"`, `\`}},
		"quotes in the subject": {CommonName: `web" ; URI=spiffe:x, By="y\`},
		"controls":              {CommonName: "a\x01b\x7fc\td", DNSNames: []string{"x\ry"}},
	} {
		t.Run(name, func(t *testing.T) {
			c := ca.Issue(t, o).Cert
			h := xfcc(c, escapePEM(c.Raw))
			els, err := certs.ParseXFCC(h)
			if err != nil || len(els) != 1 {
				t.Fatalf("%q: %d elements, %v", h, len(els), err)
			}
			for _, b := range []byte(h) {
				if b < 0x20 || b == 0x7f {
					t.Fatalf("control character in %q", h)
				}
			}
			e, id := els[0], certs.IdentityOf(c)
			if der, err := e.CertDER(); err != nil || !bytes.Equal(der, c.Raw) {
				t.Errorf("Cert: %v", err)
			}
			if "sha256:"+e.Hash != id.Fingerprint || !slices.Equal(e.URI, id.URIs) {
				t.Errorf("Hash %q URI %q, want %q %q", e.Hash, e.URI, id.Fingerprint, id.URIs)
			}
			if name != "controls" && (e.Subject != c.Subject.String() || !slices.Equal(e.DNS, c.DNSNames)) {
				t.Errorf("Subject %q DNS %q, want %q %q", e.Subject, e.DNS, c.Subject.String(), c.DNSNames)
			}
		})
	}
}

// FuzzXFCCValue: any value written into an XFCC element reads back unchanged (control
// characters aside, which are %-escaped) and never splits the element.
func FuzzXFCCValue(f *testing.F) {
	for _, s := range []string{"", `"`, `\`, `a,URI=b`, `x;y=z`, `\"`, `" , "`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var b strings.Builder
		writeXFCC(&b, "Hash", "00")
		writeXFCC(&b, "Subject", v)
		els, err := certs.ParseXFCC(b.String())
		if err != nil || len(els) != 1 {
			t.Fatalf("%q: %v", b.String(), err)
		}
		if !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) && els[0].Subject != v {
			t.Fatalf("%q read back as %q", v, els[0].Subject)
		}
	})
}

// decider answers every check with one response, and says whether it reads the body.
type decider struct {
	resp *authv3.CheckResponse
	body bool
}

func (d decider) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return d.resp, nil
}

func (d decider) NeedsBody(string, string, string, string) bool { return d.body }

var unauthorized = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.Unauthenticated)},
	HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}, Body: `{"error":"no key"}`}}}

// tlsTerminator serves a Terminator over TLS (as serve does) and returns its address.
func tlsTerminator(t *testing.T, cfg Config) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	t.Cleanup(up.Close)
	cfg.Upstream, _ = url.Parse(up.URL)
	s := httptest.NewUnstartedServer(New(cfg))
	s.EnableHTTP2 = true
	s.Config.ReadHeaderTimeout = 5 * time.Second
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

// slowPost sends headers, then one body byte a second, and returns the status of the
// answer and the bytes sent before it, or fails after a generous bound.
func slowPost(t *testing.T, addr string) (int, int) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n")
	got := make(chan *http.Response, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(45 * time.Second))
		resp, _ := http.ReadResponse(bufio.NewReader(conn), nil)
		got <- resp
	}()
	for i := 0; i < 30; i++ {
		select {
		case resp := <-got:
			if resp == nil {
				t.Fatal("no answer")
			}
			return resp.StatusCode, i
		case <-time.After(time.Second):
		}
		_, _ = io.WriteString(conn, "1\r\nx\r\n")
	}
	t.Fatal("a slow body held the request for 30 s")
	return 0, 0
}

// TestSlowClients: with no model check the decision is taken on the headers, and a
// client trickling its body gets its 401 at once; when the check needs the body, its
// read is cut off at BodyTimeout with a 408.
func TestSlowClients(t *testing.T) {
	t.Run("headers decide", func(t *testing.T) {
		addr := tlsTerminator(t, Config{Checker: decider{resp: unauthorized}, BodyTimeout: time.Hour})
		if status, sent := slowPost(t, addr); status != 401 || sent != 0 {
			t.Fatalf("status %d after %d bytes", status, sent)
		}
	})
	t.Run("body needed", func(t *testing.T) {
		addr := tlsTerminator(t, Config{Checker: decider{resp: unauthorized, body: true}, BodyTimeout: 2 * time.Second})
		if status, sent := slowPost(t, addr); status != http.StatusRequestTimeout || sent > 10 {
			t.Fatalf("status %d after %d bytes", status, sent)
		}
	})
}

// TestKeepCredentials: with no headers_to_remove (keep_credentials), the credential the
// check read reaches the upstream; its '_' spellings, never read, do not.
func TestKeepCredentials(t *testing.T) {
	var seen http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	allow := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}
	for name, remove := range map[string][]string{"keep": nil, "remove": {"authorization", "x-api-key"}} {
		t.Run(name, func(t *testing.T) {
			allow.GetOkResponse().HeadersToRemove = remove
			req := httptest.NewRequest("GET", "/x", nil)
			req.Header.Set("Authorization", "Bearer k")
			req.Header["X_api_key"] = []string{"other"}
			req.Header["AUTHORIZATION_"] = []string{"unrelated"}
			rec := httptest.NewRecorder()
			New(Config{Upstream: u, Checker: answer{allow}}).ServeHTTP(rec, req)
			if rec.Code != 200 || seen.Get("X_api_key") != "" || seen.Get("AUTHORIZATION_") != "unrelated" ||
				(seen.Get("Authorization") == "") != (remove != nil) {
				t.Fatalf("%d, upstream saw %v", rec.Code, seen)
			}
		})
	}
}

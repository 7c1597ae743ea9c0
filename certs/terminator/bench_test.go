package terminator

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/keygate/keygate/internal/certtest"
)

// BenchmarkServeHTTP is one allowed request through the terminator's handler (check
// response given, upstream on loopback), without TLS: the terminator's own cost.
func BenchmarkServeHTTP(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	ca := certtest.NewCA(b, "clients")
	leaf := ca.Issue(b, certtest.LeafOptions{URIs: []string{"spiffe://example.org/ns/prod/sa/web"}})
	term := New(Config{Upstream: u, Checker: answer{allowed()}})
	state := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf.Cert}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "https://api.example.com/v1/models", nil)
			req.Header.Set("Authorization", "Bearer mgx-sk-x")
			req.Header.Set("User-Agent", "bench")
			req.Header.Set("Accept", "application/json")
			req.TLS = state
			rec := httptest.NewRecorder()
			term.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatal(rec.Code)
			}
		}
	})
}

func allowed() *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			HeadersToRemove: []string{"authorization", "x-api-key"}}}}
}

package terminator

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
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

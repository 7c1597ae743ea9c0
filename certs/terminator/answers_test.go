package terminator

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden answers under testdata/answers")

// failing is a Checker that cannot decide.
type failing struct{}

func (failing) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return nil, errors.New("store down")
}

// errBody is a request body that fails with err.
type errBody struct{ err error }

func (b errBody) Read([]byte) (int, error) { return 0, b.err }
func (errBody) Close() error               { return nil }

// TestAnswersInProfile: every answer the terminator writes itself is the deny
// profile's envelope (pinned in testdata/answers/<profile>/<answer>.json), with its
// status, Content-Type, an X-Request-Id, and Retry-After on a 503. Each is provoked
// through the handler.
func TestAnswersInProfile(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	upURL, _ := url.Parse(up.URL)
	up.Close() // nothing listens there now: the upstream is unreachable
	post := func(body io.ReadCloser) *http.Request {
		r := httptest.NewRequest("POST", "/v1/chat/completions", nil)
		r.Body, r.ContentLength = body, 10
		return r
	}
	cases := map[authz.Answer]struct {
		checker Checker
		req     func() *http.Request
	}{
		authz.AnswerUpgradeRefused: {answer{allowed()}, func() *http.Request {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Upgrade", "h2c")
			return r
		}},
		authz.AnswerUnreadableBody: {decider{resp: allowed(), body: true}, func() *http.Request {
			return post(errBody{errors.New("connection reset")})
		}},
		authz.AnswerBodyTimeout: {decider{resp: allowed(), body: true}, func() *http.Request {
			return post(errBody{os.ErrDeadlineExceeded})
		}},
		authz.AnswerUnavailable: {failing{}, func() *http.Request { return httptest.NewRequest("GET", "/", nil) }},
		authz.AnswerForbidden:   {answer{&authv3.CheckResponse{}}, func() *http.Request { return httptest.NewRequest("GET", "/", nil) }},
		authz.AnswerBadGateway:  {answer{allowed()}, func() *http.Request { return httptest.NewRequest("GET", "/", nil) }},
	}
	if len(cases) != len(authz.Answers()) {
		t.Fatalf("%d cases for %d answers", len(cases), len(authz.Answers()))
	}
	for _, name := range authz.Profiles() {
		p, _ := authz.ParseProfile(name)
		for a, c := range cases {
			t.Run(name+"/"+a.String(), func(t *testing.T) {
				rec := httptest.NewRecorder()
				New(Config{Upstream: upURL, Checker: c.checker, Profile: p}).ServeHTTP(rec, c.req())
				body := rec.Body.String()
				if rec.Code != a.Status() {
					t.Fatalf("status %d, want %d: %s", rec.Code, a.Status(), body)
				}
				h := rec.Header()
				if h.Get("Content-Type") != "application/json" || !strings.HasPrefix(h.Get("X-Request-Id"), "req_") ||
					(h.Get("Retry-After") == "1") != (a.Status() == http.StatusServiceUnavailable) {
					t.Fatalf("headers %v", h)
				}
				var v map[string]any
				if err := json.Unmarshal([]byte(body), &v); err != nil {
					t.Fatalf("not JSON: %s", body)
				}
				checkGolden(t, filepath.Join("testdata", "answers", name, a.String()+".json"), body)
			})
		}
	}
}

// TestUnavailableIsTheProfilesBody: a failed check is answered with exactly the body
// the profile gives store_unavailable on the Envoy path.
func TestUnavailableIsTheProfilesBody(t *testing.T) {
	for _, name := range authz.Profiles() {
		want, err := os.ReadFile(filepath.Join("..", "..", "testdata", "deny", name, "store_unavailable.json"))
		if err != nil {
			t.Fatal(err)
		}
		p, _ := authz.ParseProfile(name)
		if got := p.Answer(authz.AnswerUnavailable).Body + "\n"; got != string(want) {
			t.Errorf("%s: %s, want %s", name, got, want)
		}
	}
}

// checkGolden compares body with the golden file at path (rewriting it with -update).
func checkGolden(t *testing.T, path, body string) {
	t.Helper()
	golden.Check(t, path, body, *update)
}

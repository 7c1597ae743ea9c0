package vaultstore

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/safebuf"
)

// TestFailedRequestsAreClassedAndLogged: a rejected token, a Vault that is not there
// and a hung Vault each fail lookups with their own class; the log has one line per
// class however many checks fail (rate-limited), and never the key's hash or a path.
func TestFailedRequestsAreClassedAndLogged(t *testing.T) {
	hash := authz.HashKey("mgx-sk-00000000000000000000000000000000")
	for name, tc := range map[string]struct {
		client func(t *testing.T) *api.Client
		class  string
	}{
		"wrong token": {func(t *testing.T) *api.Client {
			c := vault(t).Client(t, nil)
			c.SetToken("hvs.not-a-token")
			return c
		}, ClassDenied},
		"nothing listening": {func(t *testing.T) *api.Client {
			cfg := api.DefaultConfig()
			cfg.Address = "http://127.0.0.1:1"
			c, err := api.NewClient(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}, ClassUnreachable},
		"hung": {func(t *testing.T) *api.Client {
			return vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					<-r.Context().Done()
					return nil, r.Context().Err()
				})
			})
		}, ClassTimeout},
	} {
		t.Run(name, func(t *testing.T) {
			var logs safebuf.Buffer
			c := tc.client(t)
			c.SetMaxRetries(0)
			s, err := New(Config{Client: c, Path: "keygate", LookupTimeout: 50 * time.Millisecond,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				if _, err := s.Lookup(context.Background(), hash); err == nil {
					t.Fatal("a lookup succeeded")
				} else if got := ErrorClass(err); got != tc.class {
					t.Fatalf("class %q, want %q (%v)", got, tc.class, err)
				}
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) != 1 {
				t.Fatalf("%d log lines for 20 failures, want 1:\n%s", len(lines), logs.String())
			}
			var line map[string]any
			if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
				t.Fatal(err)
			}
			if line["class"] != tc.class || line["level"] != "WARN" || line["kind"] != "records" {
				t.Fatalf("log line %v", line)
			}
			if strings.Contains(logs.String(), hash.String()) || strings.Contains(logs.String(), "/records/") {
				t.Fatalf("the log names the key's hash or path: %s", logs.String())
			}
		})
	}
}

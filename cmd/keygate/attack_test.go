package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestTerminatorUnderscoreMethodOverride: the terminator drops '_' spellings of the
// identity and credential headers, but not of the method-override headers the check
// judges. Rack (Puma), WSGI servers and PHP read X_HTTP_Method_Override as
// X-HTTP-Method-Override, so the upstream runs as DELETE a request keygate judged as
// POST. Either the check judges it, or it never reaches the upstream.
func TestTerminatorUnderscoreMethodOverride(t *testing.T) {
	fx := startTerminatorWith(t, terminatorPolicy)
	body := `{"model":"gpt-4o"}`
	for _, h := range []string{"X-HTTP-Method-Override", "X_HTTP_Method_Override", "x_http_method", "X_Method_Override"} {
		t.Run(h, func(t *testing.T) {
			resp, got := fx.raw(t, fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: api\r\nX-API-Key: %s\r\n%s: DELETE\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				fx.key.Key, h, len(body), body))
			if resp.StatusCode == 400 {
				return // judged: the override differs from the method
			}
			var saw upstreamSaw
			if err := json.Unmarshal([]byte(got), &saw); err != nil {
				t.Fatalf("%d: %s", resp.StatusCode, got)
			}
			for name, v := range saw.Headers {
				n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
				if n == "x-http-method-override" || n == "x-http-method" || n == "x-method-override" {
					t.Errorf("allowed as POST, and the upstream got %s: %q", name, v)
				}
			}
		})
	}
}

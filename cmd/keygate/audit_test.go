package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
)

// TestAuditRecentThroughServe: serve reads back the end of an audit file an earlier run
// left with a torn last line, serves it on GET /audit with what it logs since, and
// starts its own first line on a line of its own.
func TestAuditRecentThroughServe(t *testing.T) {
	base := useVault(t)
	out, stderr, err := cli(t, "keys", "create", "--vault-path", base, "--name", "ops", "--owner", "acct_ops", "--scopes", "admin", "--json")
	if err != nil {
		t.Fatal(stderr, err)
	}
	var adminKey createdKey
	_ = json.Unmarshal([]byte(out), &adminKey)
	f, _ := authz.NewFormat("mgx-sk-")
	pasted, _ := f.Generate(nil)

	file := filepath.Join(t.TempDir(), "audit.log")
	torn := `{"time":"2026-11-24T09:00:03Z","event":"key.rev`
	earlier := strings.Join([]string{
		`{"time":"2026-11-24T09:00:00Z","event":"key.revoked","key_id":"key_AAAAAAAAAAAAAAAA","owner":"acct_x","actor":"cli"}`,
		`not an event`,
		// An older line that holds a key as it was pasted: served redacted all the same.
		`{"time":"2026-11-24T09:00:01Z","event":"admin.call","status":404,"details":{"path":"/api-keys/` + pasted + `"}}`,
		`{"time":"2026-11-24T09:00:02Z","event":"auth.spray_suspected","source":"10.0.0.9","status":429}`,
		torn,
	}, "\n")
	if err := os.WriteFile(file, []byte(earlier), 0o600); err != nil {
		t.Fatal(err)
	}
	adminAddr := freeAddr(t)
	startServe(t, "--vault-path", base, "--admin-addr", adminAddr, "--audit-log", file)

	get := func(query string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+adminAddr+"/audit?"+query, nil)
		req.Header.Set("Authorization", "Bearer "+adminKey.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	get("") // one admin.call of this run, before the next call
	status, body := get("limit=1000")
	var resp struct {
		Events    []audit.Event `json:"events"`
		Truncated bool          `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(body), &resp); status != 200 || err != nil {
		t.Fatalf("GET /audit: %d %s", status, body)
	}
	var got []string
	for _, e := range resp.Events {
		got = append(got, fmt.Sprintf("%s %d", e.Event, e.Status))
	}
	want := "admin.call 200,auth.spray_suspected 429,admin.call 404,key.revoked 0"
	if strings.Join(got, ",") != want {
		t.Fatalf("events %q, want %q\n%s", strings.Join(got, ","), want, body)
	}
	if strings.Contains(body, pasted[7:33]) || resp.Events[2].Details["path"] != "/api-keys/"+f.Hint(pasted) {
		t.Fatalf("the pasted key is served as %v", resp.Events[2].Details["path"])
	}
	if status, body := get("limit=5000"); status != 400 || !strings.Contains(body, "INVALID_REQUEST") {
		t.Fatalf("limit=5000: %d %s", status, body)
	}

	// The file: the torn line ended, this run's events whole on lines of their own.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if lines[4] != torn || len(lines) < 6 {
		t.Fatalf("the torn line became %q", lines[4])
	}
	for _, l := range lines[5:] {
		var e audit.Event
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Event != audit.AdminCall {
			t.Fatalf("line %q: %v", l, err)
		}
	}
}

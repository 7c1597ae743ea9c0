package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz/audit"
)

// TestLifecycleThroughTheCLI rotates, updates and revokes keys with the CLI against a
// running serve, and checks what the audit logs of both say.
func TestLifecycleThroughTheCLI(t *testing.T) {
	base := useVault(t)
	auditFile := filepath.Join(t.TempDir(), "audit.log")
	common := []string{"--vault-path", base, "--audit-log", auditFile}
	keys := func(args ...string) (string, error) {
		t.Helper()
		out, stderr, err := cli(t, append(append([]string{"keys"}, args...), common...)...)
		if err != nil {
			return out + stderr, err
		}
		return out, nil
	}
	out, err := keys("create", "--name", "Billing", "--owner", "acct_7", "--scopes", "chat:completions", "--expires-in", "90d", "--json")
	if err != nil {
		t.Fatal(out, err)
	}
	var first createdKey
	if err := json.Unmarshal([]byte(out), &first); err != nil {
		t.Fatal(err)
	}
	if out, err := keys("create", "--name", "Billing", "--owner", "acct_7"); err == nil || !strings.Contains(out+err.Error(), "live key with this name") {
		t.Fatalf("duplicate name: %v %s", err, out)
	}

	grpcAddr, _, _ := startServe(t, "--vault-path", base, "--audit-log", auditFile)
	check := func(key string) int {
		t.Helper()
		_, _, err := cli(t, "check", "--addr", grpcAddr, "-H", "Authorization: Bearer "+key)
		switch {
		case err == nil:
			return 200
		case errors.Is(err, exitCode(3)):
			return 401
		}
		t.Fatalf("check: %v", err)
		return 0
	}

	out, err = keys("rotate", first.ID, "--grace", "1h", "--json")
	if err != nil {
		t.Fatal(out, err)
	}
	var rotated struct {
		createdKey
		Old struct {
			Status     string     `json:"status"`
			ExpiresAt  *time.Time `json:"expires_at"`
			ReplacedBy string     `json:"replaced_by"`
		} `json:"old"`
	}
	if err := json.Unmarshal([]byte(out), &rotated); err != nil {
		t.Fatal(out, err)
	}
	if rotated.Name != "Billing" || rotated.Owner != "acct_7" || rotated.Old.Status != "rotating" || rotated.Old.ReplacedBy != rotated.ID {
		t.Fatalf("rotate printed %s", out)
	}
	if d := time.Until(*rotated.Old.ExpiresAt); d > time.Hour || d < 59*time.Minute {
		t.Fatalf("old key valid for %v more, want the 1h grace", d)
	}
	if check(first.Key) != 200 || check(rotated.Key) != 200 {
		t.Fatal("during the grace both keys must work")
	}
	out, err = keys("list")
	if err != nil || !strings.Contains(out, "rotating") || !strings.Contains(out, "active") {
		t.Fatalf("list after rotate: %v\n%s", err, out)
	}

	out, err = keys("rotate", rotated.ID, "--grace", "0", "--json")
	if err != nil {
		t.Fatal(out, err)
	}
	var third createdKey
	if err := json.Unmarshal([]byte(out), &third); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return check(rotated.Key) == 401 }, "--grace 0 leaves the old key working")
	if check(third.Key) != 200 {
		t.Fatal("the newest key does not work")
	}

	if out, err := keys("update", third.ID, "--scopes", "chat:completions,models:read"); err != nil || !strings.Contains(out, "chat:completions,models:read") {
		t.Fatalf("update: %v %s", err, out)
	}
	if out, err := keys("revoke", third.ID); err != nil {
		t.Fatal(out, err)
	}
	waitFor(t, func() bool { return check(third.Key) == 401 }, "the revoked key keeps working")

	raw, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e audit.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		events[e.Event]++
		if e.Event == audit.AuthFailed && (e.Source == "" || e.RequestID == "" || e.Reason == "") {
			t.Fatalf("auth.failed without source, request id or reason: %s", line)
		}
	}
	for _, want := range []string{audit.KeyCreated, audit.KeyRotated, audit.KeyScopesChanged, audit.KeyRevoked, audit.AuthFailed} {
		if events[want] == 0 {
			t.Errorf("no %s in the audit log: %v", want, events)
		}
	}
	for _, k := range []string{first.Key, rotated.Key, third.Key} {
		if strings.Contains(string(raw), k[7:33]) {
			t.Fatal("the audit log holds key material")
		}
	}
}

// TestRotateDueThroughTheCLI runs the rotation job twice: keys older than the policy
// are rotated and delivered once, with a JSON summary; the second run does nothing.
func TestRotateDueThroughTheCLI(t *testing.T) {
	base := useVault(t)
	for _, name := range []string{"Billing", "Search"} {
		if _, stderr, err := cli(t, "keys", "create", "--vault-path", base, "--name", name, "--owner", "acct_7",
			"--deliver", "vault:secret/"+base+"-apps/{owner}/{name}#api_key"); err != nil {
			t.Fatal(stderr, err)
		}
	}
	target := "vault:secret/" + base + "-apps/{owner}/{name}#api_key"
	// --older-than 0s makes every key due.
	out, stderr, err := cli(t, "keys", "rotate-due", "--vault-path", base, "--older-than", "0s", "--grace", "1h", "--deliver", target)
	if err != nil {
		t.Fatal(stderr, err)
	}
	var sum struct {
		Checked int `json:"checked"`
		Rotated []struct {
			OldID, NewID, DeliveredTo string
		} `json:"rotated"`
		Failed []any `json:"failed"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil || sum.Checked != 2 || len(sum.Rotated) != 2 || len(sum.Failed) != 0 {
		t.Fatalf("summary %s (%v)", out, err)
	}
	if strings.Contains(out, "mgx-sk-") {
		t.Fatal("rotate-due printed a key")
	}
	sec, err := vault(t).Client(t, nil).KVv2("secret").Get(context.Background(), base+"-apps/acct_7/billing")
	if err != nil || !strings.HasPrefix(fmt.Sprint(sec.Data["api_key"]), "mgx-sk-") {
		t.Fatalf("delivered secret: %v %v", sec, err)
	}
	// The new keys are young; the old ones replaced: nothing is due with a 1h policy.
	out, _, err = cli(t, "keys", "rotate-due", "--vault-path", base, "--older-than", "1h", "--deliver", target)
	if err != nil || !strings.Contains(out, `"rotated":[]`) {
		t.Fatalf("second run: %v %s", err, out)
	}
	if _, stderr, err := cli(t, "keys", "rotate-due", "--vault-path", base); err == nil || !strings.Contains(err.Error(), "--deliver is required") {
		t.Fatalf("rotate-due without --deliver: %v %s", err, stderr)
	}
}

func TestLastUsedAndUnusedFor(t *testing.T) {
	base := useVault(t)
	var keys []createdKey
	for _, name := range []string{"used", "idle"} {
		out, stderr, err := cli(t, "keys", "create", "--vault-path", base, "--name", name, "--owner", "acct_7", "--json")
		if err != nil {
			t.Fatal(stderr, err)
		}
		var k createdKey
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  path: %s\nusage_flush: 100ms\n", base))
	grpcAddr, _, _ := startServe(t, "--config", cfg)
	if _, _, err := cli(t, "check", "--addr", grpcAddr, "-H", "X-API-Key: "+keys[0].Key); err != nil {
		t.Fatal(err)
	}
	lastUsed := func(id string) string {
		out, _, err := cli(t, "keys", "show", id, "--vault-path", base, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			LastUsedAt string `json:"last_used_at"`
		}
		_ = json.Unmarshal([]byte(out), &v)
		return v.LastUsedAt
	}
	deadline := time.Now().Add(10 * time.Second)
	for lastUsed(keys[0].ID) == "" {
		if time.Now().After(deadline) {
			t.Fatal("the use was never flushed to Vault")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if lastUsed(keys[1].ID) != "" {
		t.Fatal("a key never used has a last use")
	}
	// Keys made today are not idle for 30 days, used or not.
	out, _, err := cli(t, "keys", "list", "--vault-path", base, "--unused-for", "30d", "--json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("unused for 30d: %v %s", err, out)
	}
}

// TestAdminAPIThroughServe reaches the admin API on serve's own listener.
func TestAdminAPIThroughServe(t *testing.T) {
	base := useVault(t)
	out, stderr, err := cli(t, "keys", "create", "--vault-path", base, "--name", "ops", "--owner", "acct_ops", "--scopes", "admin", "--json")
	if err != nil {
		t.Fatal(stderr, err)
	}
	var adminKey createdKey
	_ = json.Unmarshal([]byte(out), &adminKey)
	adminAddr := freeAddr(t)
	startServe(t, "--vault-path", base, "--admin-addr", adminAddr)
	req, _ := http.NewRequest("POST", "http://"+adminAddr+"/api-keys", strings.NewReader(`{"name":"via api","owner":"acct_9","scopes":["models:read"]}`))
	req.Header.Set("Authorization", "Bearer "+adminKey.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !strings.Contains(string(body), `"key":"mgx-sk-`) {
		t.Fatalf("POST /api-keys: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + adminAddr + "/api-keys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("GET /api-keys without a key: %d", resp.StatusCode)
	}
	// A plain-HTTP listener on loopback answers only as localhost or a loopback
	// address: a name rebound to 127.0.0.1 by an attacker's DNS gets 421, the admin
	// key notwithstanding, on the API and the console alike.
	_, port, _ := net.SplitHostPort(adminAddr)
	for host, want := range map[string]int{"localhost:" + port: 200, adminAddr: 200, "rebind.attacker.example:" + port: 421} {
		for _, path := range []string{"/api-keys", "/console/"} {
			req, _ := http.NewRequest("GET", "http://"+adminAddr+path, nil)
			req.Host = host
			req.Header.Set("Authorization", "Bearer "+adminKey.Key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("GET %s as Host %s: %d, want %d", path, host, resp.StatusCode, want)
			}
		}
	}
}

func waitFor(t *testing.T, cond func() bool, failure string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second) // the revocation bound
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(failure)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

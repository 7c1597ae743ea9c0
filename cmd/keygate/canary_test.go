package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCanary runs a whole scenario with one known key, then scans everything keygate
// wrote or served (logs, CLI output and errors, HTTP endpoints, Vault's KV contents,
// every version) for the key and for its random part. The key may appear once: in the
// output of "keys create".
func TestCanary(t *testing.T) {
	base := useVault(t)
	var outputs []string // everything to scan, except create's output
	record := func(parts ...string) { outputs = append(outputs, parts...) }

	created, stderr, err := cli(t, "keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "canary", "--scopes", "chat:completions", "--json")
	if err != nil {
		t.Fatal(err)
	}
	record(stderr)
	var k createdKey
	if err := json.Unmarshal([]byte(created), &k); err != nil {
		t.Fatal(err)
	}
	random := k.Key[len("mgx-sk-") : len("mgx-sk-")+26]

	grpcAddr, httpAddr, logs := startServe(t, "--vault-path", base, "--log-level", "debug")
	typo := k.Key[:len(k.Key)-1] + "a"
	if strings.HasSuffix(k.Key, "a") {
		typo = k.Key[:len(k.Key)-1] + "b"
	}
	for _, headers := range [][]string{
		{"Authorization: Bearer " + k.Key},
		{"X-API-Key: " + k.Key},
		{"Authorization: Bearer " + k.Key[:20] + " " + k.Key[20:]},           // whitespace inside
		{"Authorization: Basic " + k.Key},                                    // wrong scheme
		{"Authorization: Bearer mx4-sk-" + k.Key[7:]},                        // wrong prefix
		{"Authorization: Bearer " + k.Key, "X-API-Key: " + typo},             // two keys
		{"Authorization: Bearer " + typo},                                    // bad checksum
		{"Authorization: Bearer " + k.Key, "Authorization: Bearer " + k.Key}, // repeated
	} {
		args := []string{"check", "--addr", grpcAddr}
		for _, h := range headers {
			args = append(args, "-H", h)
		}
		out, errOut, err := cli(t, args...)
		record(out, errOut, errString(err))
	}
	for _, args := range [][]string{
		{"keys", "list", "--vault-path", base},
		{"keys", "list", "--vault-path", base, "--json"},
		{"keys", "show", k.ID, "--vault-path", base},
		{"keys", "show", k.Key, "--vault-path", base}, // a key pasted where an id belongs
		{"keys", "revoke", k.Key, "--vault-path", base},
		{"keys", "revoke", k.ID, "--vault-path", base, "--json"},
		{"check", "--addr", grpcAddr, "-H", "X-API-Key: " + k.Key}, // revoked (maybe still cached)
	} {
		out, errOut, err := cli(t, args...)
		record(out, errOut, errString(err))
	}
	time.Sleep(time.Second) // let the revocation reach the cache
	out, errOut, err := cli(t, "check", "--addr", grpcAddr, "-H", "X-API-Key: "+k.Key)
	if !errors.Is(err, exitCode(3)) {
		t.Fatalf("revoked key: %v\n%s", err, out)
	}
	record(out, errOut)
	for _, path := range []string{"/healthz", "/readyz", "/debug/vars", "/metrics"} {
		resp, err := http.Get("http://" + httpAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		record(string(body))
	}
	record(vault(t).DumpKV(t, "secret", base))

	all := strings.Join(outputs, "\n") + logs.String()
	if !strings.Contains(all, k.ID) || !strings.Contains(all, `"reason":"malformed_key"`) || !strings.Contains(all, "key_sha256") {
		t.Fatalf("the scanned output lacks what the scenario must have produced; the scan proves nothing:\n%s", all)
	}
	for name, secret := range map[string]string{"key": k.Key, "random part": random, "random part minus checksum": random[:20]} {
		if n := strings.Count(all, secret); n != 0 {
			t.Errorf("the %s appears %d times in keygate's output", name, n)
		}
	}
	if strings.Count(created, k.Key) != 1 {
		t.Errorf("keys create printed the key %d times, want once", strings.Count(created, k.Key))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestVaultAddresses: a list of Vault addresses is failed over in turn by the keys
// commands; bad lists are refused with a clear error.
func TestVaultAddresses(t *testing.T) {
	base := useVault(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	t.Setenv("VAULT_ADDR", "")
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  addresses: [%s, %s]\n  path: %s\n", dead, vault(t).Addr, base))
	if out, stderr, err := cli(t, "keys", "create", "--config", cfg, "--owner", "acct_ha", "--name", "through a dead node", "--json"); err != nil || !strings.Contains(out, `"key":"mgx-sk-`) {
		t.Fatalf("keys create with a dead first address: %v\n%s", err, stderr)
	}
	for name, c := range map[string]struct{ yaml, want string }{
		"both":      {"vault:\n  address: http://127.0.0.1:1\n  addresses: [http://127.0.0.1:2]\n", "address or addresses, not both"},
		"no scheme": {"vault:\n  addresses: [127.0.0.1:8200]\n", "vault.addresses"},
		"twice":     {"vault:\n  addresses: [http://a:8200, http://A:8200]\n", "appears twice"},
		"creds":     {"vault:\n  addresses: [\"http://u:secretpw@a:8200\"]\n", "credentials"},
		"path":      {"vault:\n  addresses: [http://a:8200/v1]\n", "vault.addresses"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := cli(t, "keys", "list", "--config", writeConfig(t, c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatal("the error repeats a password")
			}
		})
	}
}

// TestRedisModes: each mode builds its client; wrong combinations are refused.
func TestRedisModes(t *testing.T) {
	for name, c := range map[string]struct{ yaml, want string }{
		"single":            {"mode: single\n    address: 127.0.0.1:6379", ""},
		"default":           {"address: 127.0.0.1:6379", ""},
		"sentinel":          {"mode: sentinel\n    master_name: m\n    addresses: [127.0.0.1:26379]", ""},
		"cluster":           {"mode: cluster\n    addresses: [127.0.0.1:7000, 127.0.0.1:7001]", ""},
		"unknown mode":      {"mode: ring", "must be single, sentinel or cluster"},
		"case":              {"mode: Sentinel\n    master_name: m\n    addresses: [127.0.0.1:26379]", "must be single, sentinel or cluster"},
		"single with list":  {"addresses: [127.0.0.1:6379]", "need mode sentinel or cluster"},
		"sentinel, no name": {"mode: sentinel\n    addresses: [127.0.0.1:26379]", "master_name"},
		"sentinel, no list": {"mode: sentinel\n    master_name: m", "addresses"},
		"cluster, no list":  {"mode: cluster", "addresses"},
		"cluster, db":       {"mode: cluster\n    addresses: [127.0.0.1:7000]\n    db: 2", "no master_name or db"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg, err := parseConfig([]byte("rate_limits:\n  backend: redis\n  plans:\n    p: {per_minute: 6, burst: 1}\n  redis:\n    " + c.yaml + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			_, _, closer, err := cfg.limiter()
			if closer != nil {
				closer.Close()
			}
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("got %v, want an error naming %q", err, c.want)
			}
		})
	}
}

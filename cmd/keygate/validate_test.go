package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigValidate: every problem of a file is reported at once, each with its field
// path and line, and typos get the nearest field.
func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	p := newSitePKI(t)
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	for name, tc := range map[string]struct {
		body string
		want []string // each must appear; the count of problems must match
	}{
		"valid": {body: fmt.Sprintf("grpc_addr: 127.0.0.1:9001\ncache:\n  ttl: 90s\n  stale_for: 0\ntls:\n  grpc: {cert_file: %s, key_file: %s, client_ca_file: %s}\n",
			p.serverCert, p.serverKey, p.caFile)},
		"empty file":      {body: ""},
		"json is yaml":    {body: `{"cache": {"ttl": "1m"}}`},
		"duration":        {body: "grpc_addr: 127.0.0.1:9001\ncache:\n  ttl: 5 minutes\n", want: []string{`cache.ttl: invalid duration "5 minutes": use 90d or 1h30m (units: d, h, m, s, ms) (line 3)`}},
		"bare number dur": {body: "shutdown_grace: 10\n", want: []string{"shutdown_grace: invalid duration 10: use 90d or 1h30m (units: d, h, m, s, ms) (line 1)"}},
		"typo":            {body: "key_prefx: mgx-sk-\n", want: []string{"key_prefx: unknown field (did you mean key_prefix?) (line 1)"}},
		"nested typo":     {body: "cache:\n  tll: 1m\n", want: []string{"cache.tll: unknown field (did you mean cache.ttl?) (line 2)"}},
		"misplaced":       {body: "ttl: 1m\n", want: []string{"ttl: unknown field here (did you mean cache.ttl?) (line 1)"}},
		"duplicate":       {body: "log_level: info\nlog_level: debug\n", want: []string{"log_level: given twice (first on line 1) (line 2)"}},
		"tab":             {body: "cache:\n\tttl: 1m\n", want: []string{"not valid YAML: line 2:", "never tabs"}},
		"not a mapping":   {body: "- a\n- b\n", want: []string{"the file must be a YAML mapping"}},
		"mapping for str": {body: "key_prefix: {a: b}\n", want: []string{"key_prefix: want a string, got a mapping (line 1)"}},
		"enums": {body: "log_level: verbose\ndeny_profile: nope\nrate_limits:\n  backend: memcached\n  redis: {on_failure: maybe}\nvault:\n  auth: {method: kerberos}\ntls:\n  grpc: {cert_file: a, key_file: b, profile: fips}\n",
			want: []string{
				`log_level: unknown level "verbose": use debug, info, warn or error (line 1)`,
				`deny_profile: unknown profile "nope": use magicx, apikey, mythiq or openai (line 2)`,
				`rate_limits.backend: unknown backend "memcached": use local or redis (line 4)`,
				`rate_limits.redis.on_failure: unknown value "maybe": use closed or open (line 5)`,
				`vault.auth.method: unknown method "kerberos": use token, approle or cert (line 7)`,
				`tls.grpc.profile: unknown TLS profile "fips": use default or cnsa (line 9)`,
			}},
		"addresses": {body: "grpc_addr: localhost\nadmin_addr: 127.0.0.1:99999\nvault:\n  address: 127.0.0.1:8200\n",
			want: []string{`grpc_addr: "localhost": want host:port`, `admin_addr: "127.0.0.1:99999": the port must be`, `vault.address: "127.0.0.1:8200": want http://host:port`}},
		"plans": {body: "rate_limits:\n  default_plan: gold\n  plans:\n    free: {per_minute: -1}\n    pro: {per_minut: 5}\n",
			want: []string{`rate_limits.default_plan: plan "gold" is not defined under rate_limits.plans (defined: free, pro) (line 2)`,
				"rate_limits.plans.pro.per_minut: unknown field (did you mean rate_limits.plans.pro.per_minute?) (line 5)",
				`rate_limits.plans.free: plan "free" has a negative setting (line 4)`}},
		"policy": {body: "policy:\n  routes:\n    - {name: ok, prefix: /v1/}\n    - {name: bad, prefix: v1}\n",
			want: []string{"policy.routes[1]: ", "paths start with '/' (line 4)"}},
		"identity rule": {body: fmt.Sprintf("client_certs:\n  ca_file: %s\n  identity_rules:\n    - {name: everyone}\n", p.caFile),
			want: []string{"client_certs.identity_rules[0]: ", "matches every certificate (line 4)"}},
		"negatives": {body: "cache:\n  size: -1\n  poll_interval: 0s\n  stale_for: -1s\n",
			want: []string{"cache.size: must not be negative (line 2)", "cache.poll_interval: must be positive, such as 500ms (line 3)", "cache.stale_for: must not be negative (line 4)"}},
		"files": {body: fmt.Sprintf("tls:\n  grpc: {cert_file: %s, key_file: %s}\n  http: {cert_file: %s, key_file: %s}\nclient_certs:\n  ca_file: %s\nvault:\n  token_file: %s\n  tls: {ca_cert: %s}\n  auth: {method: approle, role_id_file: %s, secret_id_file: %s}\nrate_limits:\n  redis: {password_file: %s}\naudit_log: %s\n",
			missing, p.serverKey, garbage, garbage, garbage, empty, garbage, missing, empty, missing, filepath.Join(missing, "audit.log")),
			want: []string{"tls.grpc: ", "no such file or directory (line 2)", "tls.http: ", "(line 3)", "client_certs: no CA certificates in the bundle (line 5)",
				"vault.token_file: ", "is empty (line 7)", "vault.tls.ca_cert: ", "holds no PEM certificate (line 8)",
				"vault.auth.role_id_file: ", "vault.auth.secret_id_file: ", "rate_limits.redis.password_file: ", "audit_log: directory"}},
		"terminator": {body: "terminate: {addr: 127.0.0.1:0, upstream: ftp://x}\n",
			want: []string{`terminate.upstream: "ftp://x": want an http:// or https:// URL`, "terminate.tls: the terminator needs"}},
	} {
		t.Run(name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "keygate.yaml")
			if err := os.WriteFile(f, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, err := cli(t, "config", "validate", "--config", f)
			if len(tc.want) == 0 {
				if err != nil || !strings.Contains(out, "configuration OK") {
					t.Fatalf("valid config refused: %v\n%s", err, stderr)
				}
				return
			}
			if !errors.Is(err, exitCode(1)) {
				t.Fatalf("exit %v, want 1\n%s", err, stderr)
			}
			if !strings.Contains(stderr, "(YAML)") {
				t.Errorf("the report does not say the file is YAML:\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("report lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestServeRunsValidation: serve refuses a configuration validate refuses, before it
// reaches Vault, with the same report.
func TestServeRunsValidation(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1") // never reached
	f := writeConfig(t, "cache:\n  ttl: 5 minutes\ntls:\n  grpc: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n")
	_, _, err := cli(t, "serve", "--config", f, "--grpc-addr", freeAddr(t), "--http-addr", "", "--admin-addr", "")
	if err == nil || !strings.Contains(err.Error(), `cache.ttl: invalid duration "5 minutes"`) || !strings.Contains(err.Error(), "(line 2)") {
		t.Fatalf("serve with a bad duration: %v", err)
	}
	f = writeConfig(t, "tls:\n  grpc: {cert_file: /nonexistent/c.pem, key_file: /nonexistent/k.pem}\n")
	_, _, err = cli(t, "serve", "--config", f, "--grpc-addr", freeAddr(t), "--http-addr", "", "--admin-addr", "")
	if err == nil || !strings.Contains(err.Error(), "tls.grpc: ") || !strings.Contains(err.Error(), "(line 2)") {
		t.Fatalf("serve with a missing certificate: %v", err)
	}
}

// TestFlagMessages: flags give the message the file gives.
func TestFlagMessages(t *testing.T) {
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1") // never reached
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"keys", "create", "--name", "x", "--owner", "o", "--expires-in", "90days"}, `--expires-in: invalid duration "90days": use 90d or 1h30m`},
		{[]string{"keys", "list", "--unused-for", "a while"}, `--unused-for: invalid duration "a while": use 90d or 1h30m`},
		{[]string{"serve", "--log-level", "verbose"}, `log_level: unknown level "verbose": use debug, info, warn or error`},
		{[]string{"serve", "--deny-profile", "nope"}, `deny_profile: unknown profile "nope": use magicx, apikey, mythiq or openai`},
		{[]string{"certs", "issue", "--ca-dir", t.TempDir(), "--client", "--out", "x", "--ttl", "1 year"}, `invalid duration "1 year": use 90d or 1h30m`},
	} {
		_, stderr, err := cli(t, tc.args...)
		if err == nil || !strings.Contains(err.Error()+stderr, tc.want) {
			t.Errorf("%v: %v %s; want %q", tc.args, err, stderr, tc.want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"ttl", "tll", 1}, {"key_prefx", "key_prefix", 1}, {"abc", "", 3}, {"kitten", "sitting", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

// TestKeysPreflightAndPlans: keys commands name a wrong mount and a wrong token with
// their fix, and refuse a plan the config does not define.
func TestKeysPreflightAndPlans(t *testing.T) {
	base := useVault(t)
	if _, _, err := cli(t, "keys", "list", "--vault-mount", "nosuchmount", "--vault-path", base); err == nil ||
		!strings.Contains(err.Error(), "vault secrets enable -path=nosuchmount kv-v2") {
		t.Fatalf("keys list on a missing mount: %v", err)
	}
	t.Setenv("VAULT_TOKEN", "hvs.not-a-token")
	if _, _, err := cli(t, "keys", "list", "--vault-path", base); err == nil || !strings.Contains(err.Error(), "VAULT_TOKEN rejected (403)") {
		t.Fatalf("keys list with a bad token: %v", err)
	}
	t.Setenv("VAULT_TOKEN", vault(t).Token)
	cfg := writeConfig(t, fmt.Sprintf("vault: {path: %s}\nrate_limits:\n  plans:\n    free: {per_minute: 60}\n", base))
	if _, _, err := cli(t, "keys", "create", "--config", cfg, "--name", "x", "--owner", "o", "--plan", "nonexistent"); err == nil ||
		!strings.Contains(err.Error(), `--plan "nonexistent": the config defines no such plan (defined: free)`) {
		t.Fatalf("keys create --plan nonexistent: %v", err)
	}
	if _, _, err := cli(t, "keys", "create", "--config", cfg, "--name", "x", "--owner", "o", "--plan", "free"); err != nil {
		t.Fatalf("keys create --plan free: %v", err)
	}
	// serve refuses a missing mount instead of reporting ready.
	_, _, err := cli(t, "serve", "--vault-mount", "nosuchmount", "--vault-path", base, "--grpc-addr", freeAddr(t), "--http-addr", "", "--admin-addr", "")
	if err == nil || !strings.Contains(err.Error(), "vault secrets enable -path=nosuchmount kv-v2") {
		t.Fatalf("serve on a missing mount: %v", err)
	}
}

// TestUndecodableRecordIsSkipped: a damaged record does not hide the others from keys
// list and rotate-due; it is named on stderr (and in rotate-due's summary), and the exit
// status is 1.
func TestUndecodableRecordIsSkipped(t *testing.T) {
	base := useVault(t)
	good := createKey(t, vault(t), base)
	kv := vault(t).Client(t, nil).KVv2("secret")
	ctx := context.Background()
	hash := strings.Repeat("ab", 32)
	for path, data := range map[string]map[string]any{
		base + "/ids/key_AAAAAAAAAAAAAAAA": {"key_sha256": "not-a-hash"},
		base + "/ids/key_BBBBBBBBBBBBBBBB": {"key_sha256": hash},
		base + "/records/" + hash:          {"id": "key_BBBBBBBBBBBBBBBB", "scopes": "not a list", "key_sha256": hash},
	} {
		if _, err := kv.Put(ctx, path, data); err != nil {
			t.Fatal(err)
		}
	}
	out, stderr, err := cli(t, "keys", "list", "--vault-path", base, "--json")
	if !errors.Is(err, exitCode(1)) || !strings.Contains(out, good.ID) {
		t.Fatalf("keys list: %v\n%s%s", err, out, stderr)
	}
	for _, id := range []string{"key_AAAAAAAAAAAAAAAA", "key_BBBBBBBBBBBBBBBB"} {
		if !strings.Contains(stderr, "warning: skipped "+id) {
			t.Errorf("stderr does not name %s:\n%s", id, stderr)
		}
	}
	if strings.Contains(stderr, hash) {
		t.Errorf("a record's hash reached stderr:\n%s", stderr)
	}
	out, _, err = cli(t, "keys", "rotate-due", "--vault-path", base, "--older-than", "0s", "--deliver", "vault:secret/"+base+"-apps/{owner}/{name}#api_key")
	if !errors.Is(err, exitCode(1)) || !strings.Contains(out, `"skipped":[{"id":"key_`) || !strings.Contains(out, good.ID) {
		t.Fatalf("rotate-due: %v\n%s", err, out)
	}
}

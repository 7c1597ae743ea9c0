package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/internal/safebuf"
	"github.com/keygate/keygate/internal/vaulttest"
)

// shared is the package's Vault dev server, started by the first test that needs it.
var shared vaulttest.Shared

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

func vault(t testing.TB) *vaulttest.Server { return shared.Get(t) }

// cli runs keygate in-process with the test's Vault and returns stdout, stderr and the
// error run returned.
func cli(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func useVault(t *testing.T) (base string) {
	t.Helper()
	t.Setenv("VAULT_ADDR", vault(t).Addr)
	t.Setenv("VAULT_TOKEN", vault(t).Token)
	return vaulttest.UniquePath(t)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startServe runs "keygate serve" in-process until the test ends and waits until its
// gRPC health service reports SERVING.
func startServe(t *testing.T, args ...string) (grpcAddr, httpAddr string, logs *safebuf.Buffer) {
	t.Helper()
	grpcAddr, httpAddr = freeAddr(t), freeAddr(t)
	if !slices.Contains(args, "--admin-addr") {
		args = append(args, "--admin-addr", "")
	}
	logs = &safebuf.Buffer{}
	done := launchServe(t, logs, append([]string{"--grpc-addr", grpcAddr, "--http-addr", httpAddr}, args...)...)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return grpcAddr, httpAddr, logs
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v\n%s", err, logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve not healthy: %v\n%s", err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// launchServe runs "keygate serve" in-process until the test ends, logging to logs,
// without waiting for it. done receives what run returns, if it returns early.
func launchServe(t *testing.T, logs *safebuf.Buffer, args ...string) (done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- run(ctx, append([]string{"serve"}, args...), logs, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ch:
			if err != nil {
				t.Errorf("serve returned %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop after its context ended")
		}
	})
	return ch
}

type createdKey struct {
	ID        string     `json:"id"`
	Key       string     `json:"key"`
	Name      string     `json:"name"`
	Owner     string     `json:"owner"`
	Scopes    []string   `json:"scopes"`
	Status    string     `json:"status"`
	Hint      string     `json:"hint"`
	ExpiresAt *time.Time `json:"expires_at"`
}

// TestKeyCreatedByCLIIsAllowed is the end-to-end path: the CLI issues a key into Vault,
// serve allows it over gRPC, the CLI revokes it, serve denies it.
func TestKeyCreatedByCLIIsAllowed(t *testing.T) {
	base := useVault(t)
	out, stderr, err := cli(t, "keys", "create", "--vault-path", base, "--name", "Production App", "--owner", "acct_9",
		"--scopes", "chat:completions, models:read", "--expires-in", "90d", "--json")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, stderr)
	}
	var k createdKey
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatalf("keys create --json printed %q: %v", out, err)
	}
	if !strings.HasPrefix(k.Key, "mgx-sk-") || !strings.HasPrefix(k.ID, "key_") || k.Name != "Production App" ||
		k.Owner != "acct_9" || strings.Join(k.Scopes, ",") != "chat:completions,models:read" || k.ExpiresAt == nil ||
		k.Status != "active" {
		t.Fatalf("created %+v", k)
	}
	if d := time.Until(*k.ExpiresAt); d < 89*24*time.Hour || d > 90*24*time.Hour {
		t.Fatalf("expires_at %v is not 90 days out", k.ExpiresAt)
	}
	random := k.Key[len("mgx-sk-") : len("mgx-sk-")+26]

	grpcAddr, httpAddr, logs := startServe(t, "--vault-path", base, "--deny-profile", "apikey")

	out, _, err = cli(t, "check", "--addr", grpcAddr, "-H", "Authorization: Bearer "+k.Key)
	if err != nil || !strings.HasPrefix(out, "ALLOW") || !strings.Contains(out, "x-api-key-id: "+k.ID) {
		t.Fatalf("check with the new key: %v\n%s", err, out)
	}
	out, _, err = cli(t, "check", "--addr", grpcAddr)
	if !errors.Is(err, exitCode(3)) || !strings.Contains(out, `"MISSING_API_KEY"`) {
		t.Fatalf("check without a key: %v\n%s", err, out)
	}

	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	resp.Body.Close()

	out, _, err = cli(t, "keys", "show", k.ID, "--vault-path", base, "--json")
	if err != nil || !strings.Contains(out, `"status":"active"`) || !strings.Contains(out, k.Hint) {
		t.Fatalf("keys show: %v\n%s", err, out)
	}
	out, _, err = cli(t, "keys", "list", "--vault-path", base)
	if err != nil || !strings.Contains(out, k.ID) || !strings.Contains(out, "active") {
		t.Fatalf("keys list: %v\n%s", err, out)
	}
	if _, _, err = cli(t, "keys", "revoke", "--vault-path", base, k.ID); err != nil {
		t.Fatal(err)
	}
	// The server cached the key; the change feed carries the revocation to it.
	deadline := time.Now().Add(2 * time.Second)
	for {
		out, _, err = cli(t, "check", "--addr", grpcAddr, "-H", "X-API-Key: "+k.Key)
		if errors.Is(err, exitCode(3)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !errors.Is(err, exitCode(3)) || !strings.Contains(out, `"key_id":"`+k.ID+`"`) {
		t.Fatalf("check with the revoked key, 2s after the revoke: %v\n%s", err, out)
	}
	out, _, err = cli(t, "keys", "list", "--vault-path", base, "--json")
	if err != nil || !strings.Contains(out, `"status":"revoked"`) {
		t.Fatalf("keys list after revoke: %v\n%s", err, out)
	}
	// The key was printed once, by create; nothing since carries it.
	if strings.Contains(out, random) || strings.Contains(logs.String(), random) {
		t.Fatal("the key shows up after create")
	}
	if !strings.Contains(logs.String(), `"reason":"revoked_key"`) {
		t.Fatalf("serve logged no denial:\n%s", logs)
	}
}

func TestKeysCreateText(t *testing.T) {
	base := useVault(t)
	out, _, err := cli(t, "keys", "create", "--owner", "acct_test", "--vault-path", base, "--key-prefix", "mutx_live_", "--name", "GitHub Actions")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "    mutx_live_") || !strings.Contains(out, "only time the key is shown") {
		t.Fatalf("keys create printed:\n%s", out)
	}
}

func TestCLIErrors(t *testing.T) {
	base := useVault(t)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no name":          {[]string{"keys", "create", "--owner", "acct_test", "--vault-path", base}, "--name and --owner are required"},
		"no owner":         {[]string{"keys", "create", "--name", "x", "--vault-path", base}, "--name and --owner are required"},
		"bad expiry":       {[]string{"keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "x", "--expires-in", "soon"}, "invalid duration"},
		"negative expiry":  {[]string{"keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "x", "--expires-in", "-1h"}, "must be positive"},
		"bad scope":        {[]string{"keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "x", "--scopes", "a b"}, "invalid key spec"},
		"bad prefix":       {[]string{"keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "x", "--key-prefix", "a b"}, "invalid key prefix"},
		"bad vault path":   {[]string{"keys", "list", "--vault-path", "../sys"}, "invalid vault path"},
		"unknown id":       {[]string{"keys", "show", "key_0000000000000000", "--vault-path", base}, "not found"},
		"malformed id":     {[]string{"keys", "revoke", "../../x", "--vault-path", base}, "invalid key id"},
		"no id":            {[]string{"keys", "show", "--vault-path", base}, "a key id is required"},
		"extra argument":   {[]string{"keys", "list", "extra"}, "unexpected argument"},
		"bad profile":      {[]string{"serve", "--vault-path", base, "--deny-profile", "nope"}, "unknown profile \"nope\""},
		"bad log level":    {[]string{"serve", "--vault-path", base, "--log-level", "loud"}, "log_level"},
		"missing config":   {[]string{"keys", "list", "--config", filepath.Join(t.TempDir(), "none.yaml")}, "no such file"},
		"unknown command":  {[]string{"frobnicate"}, ""},
		"unknown keys cmd": {[]string{"keys", "frobnicate"}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, err := cli(t, tc.args...)
			if err == nil {
				t.Fatal("succeeded")
			}
			if !strings.Contains(err.Error()+stderr, tc.want) {
				t.Fatalf("error %q (stderr %q), want it to mention %q", err, stderr, tc.want)
			}
		})
	}
}

func TestNoVaultToken(t *testing.T) {
	t.Setenv("VAULT_ADDR", vault(t).Addr)
	t.Setenv("VAULT_TOKEN", "")
	t.Setenv("HOME", t.TempDir()) // no ~/.vault-token either
	_, _, err := cli(t, "keys", "list")
	if err == nil || !strings.Contains(err.Error(), "no Vault token") {
		t.Fatalf("keys list without a token: %v", err)
	}
}

func TestConfigFile(t *testing.T) {
	base := useVault(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tokenFile := write("token", vault(t).Token+"\n")
	t.Setenv("VAULT_TOKEN", "")
	good := write("good.yaml", fmt.Sprintf("key_prefix: mx4-sk-\nvault:\n  address: %s\n  token_file: %s\n  path: %s\n  lookup_timeout: 100ms\n", vault(t).Addr, tokenFile, base))
	out, _, err := cli(t, "keys", "create", "--owner", "acct_test", "--config", good, "--name", "from config", "--json")
	if err != nil || !strings.Contains(out, `"key":"mx4-sk-`) {
		t.Fatalf("create with a config file: %v\n%s", err, out)
	}
	for name, body := range map[string]string{
		"unknown field":  "key_prefx: mx4-sk-\n",
		"bad duration":   "vault:\n  lookup_timeout: fast\n",
		"number for dur": "shutdown_grace: 10\n",
		"not yaml":       "key_prefix: [\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := cli(t, "keys", "list", "--config", write("bad.yaml", body)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestUsage(t *testing.T) {
	if _, _, err := cli(t); !errors.Is(err, exitCode(2)) {
		t.Fatalf("no arguments: %v", err)
	}
	out, _, err := cli(t, "version")
	if err != nil || !strings.HasPrefix(out, "keygate ") {
		t.Fatalf("version: %q %v", out, err)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a running server.

// TestAppRoleFromConfig logs the CLI in with AppRole credentials named in the config.
func TestAppRoleFromConfig(t *testing.T) {
	base := useVault(t)
	root := vault(t).Client(t, nil)
	mount := "approle-cli-" + base[len(base)-12:]
	if err := root.Sys().EnableAuthWithOptions(mount, &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatal(err)
	}
	policy := `path "secret/data/` + base + `/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/` + base + `/ids" { capabilities = ["list"] }`
	if err := root.Sys().PutPolicy(mount, policy); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("auth/"+mount+"/role/keys", map[string]any{"token_policies": mount}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/" + mount + "/role/keys/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/"+mount+"/role/keys/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	roleFile, secretFile := filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
	for f, v := range map[string]string{roleFile: rid.Data["role_id"].(string), secretFile: sid.Data["secret_id"].(string)} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("VAULT_TOKEN", "")
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  path: %s\n  auth:\n    method: approle\n    mount: %s\n    role_id_file: %s\n    secret_id_file: %s\n",
		base, mount, roleFile, secretFile))
	if out, stderr, err := cli(t, "keys", "create", "--owner", "acct_test", "--config", cfg, "--name", "via approle", "--json"); err != nil || !strings.Contains(out, `"key":"mgx-sk-`) {
		t.Fatalf("keys create with approle: %v\n%s%s", err, out, stderr)
	}
	if out, _, err := cli(t, "keys", "list", "--config", cfg); err != nil || !strings.Contains(out, "via approle") {
		t.Fatalf("keys list with approle: %v\n%s", err, out)
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"", "grpc_addr: 127.0.0.1:9001\n", "vault:\n  lookup_timeout: 150ms\n", "cache:\n  ttl: 90d\n",
		"key_prefix: [\n", "shutdown_grace: 10\n", "vault: {auth: {method: approle}}\n", "a: &a [*a, *a]\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		// The line-reporting parser never accepts what the strict one refuses.
		_, _, probs := parseConfigLines(raw)
		cfg, err := parseConfig(raw)
		if err != nil {
			if len(probs) == 0 {
				t.Fatalf("parseConfigLines accepted %q, which parseConfig refuses: %v", raw, err)
			}
			return
		}
		// Whatever parses survives a round trip: nothing was half-read or misread.
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal %+v: %v", cfg, err)
		}
		again, err := parseConfig(out)
		if err != nil || !reflect.DeepEqual(again, cfg) {
			t.Fatalf("round trip of %q:\n%s\n%+v\n%+v (%v)", raw, out, cfg, again, err)
		}
	})
}

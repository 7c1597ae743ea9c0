package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/safebuf"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// keygateBinary builds cmd/keygate once per test run.
func keygateBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keygate-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "keygate")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// replica is a "keygate serve" process.
type replica struct {
	grpcAddr string
	client   authv3.AuthorizationClient
	logs     *safebuf.Buffer
}

func startReplica(t *testing.T, v *vaulttest.Server, configFile string) *replica {
	t.Helper()
	return startReplicaEnv(t, v.Env(), configFile)
}

// startReplicaEnv is startReplica with the given environment (VAULT_*) added.
func startReplicaEnv(t *testing.T, env []string, configFile string) *replica {
	t.Helper()
	r := &replica{grpcAddr: freeAddr(t), logs: &safebuf.Buffer{}}
	cmd := exec.Command(keygateBinary(t), "serve", "--config", configFile, "--grpc-addr", r.grpcAddr, "--http-addr", "", "--admin-addr", "")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = r.logs, r.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Error("replica did not stop on SIGTERM")
		}
	})
	conn, err := grpc.NewClient(r.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	r.client = authv3.NewAuthorizationClient(conn)
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return r
		}
		select {
		case <-exited:
			t.Fatalf("replica exited:\n%s", r.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica not serving: %v\n%s", err, r.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// check sends an Envoy-shaped CheckRequest with the key and returns the HTTP status
// the client would get (200 for an allow).
func (r *replica) check(ctx context.Context, key string) (int, error) {
	resp, err := r.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer " + key},
		}},
	}})
	if err != nil {
		return 0, err
	}
	if resp.GetOkResponse() != nil {
		return 200, nil
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode()), nil
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keygate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var keyCount int

// createKey makes a key with the CLI against v, with the given comma-separated scopes.
func createKey(t *testing.T, v *vaulttest.Server, base string, scopes ...string) createdKey {
	t.Helper()
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	keyCount++
	return cliKey(t, base, "acct_test", fmt.Sprintf("key %d", keyCount), "--scopes", strings.Join(scopes, ","))
}

// cliKey makes a key with `keygate keys create` under base (the Vault in the
// environment) and returns what it printed.
func cliKey(t *testing.T, base, owner, name string, extra ...string) createdKey {
	t.Helper()
	args := append([]string{"keys", "create", "--vault-path", base, "--name", name, "--owner", owner, "--json"}, extra...)
	out, stderr, err := cli(t, args...)
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, stderr)
	}
	var k createdKey
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRevocationReachesEveryReplica runs two keygate processes with an hour-long cache
// TTL against one Vault: a revoke made through the CLI is denied by both within 2 s.
func TestRevocationReachesEveryReplica(t *testing.T) {
	base := vaulttest.UniquePath(t)
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  path: %s\ncache:\n  ttl: 1h\n  poll_interval: 500ms\n", base))
	k := createKey(t, vault(t), base)
	replicas := []*replica{startReplica(t, vault(t), cfg), startReplica(t, vault(t), cfg)}
	ctx := context.Background()
	for i, r := range replicas {
		if code, err := r.check(ctx, k.Key); err != nil || code != 200 {
			t.Fatalf("replica %d before the revoke: %d %v", i, code, err)
		}
	}
	if _, stderr, err := cli(t, "keys", "revoke", k.ID, "--vault-path", base); err != nil {
		t.Fatalf("revoke: %v\n%s", err, stderr)
	}
	revoked := time.Now()
	for i, r := range replicas {
		for {
			code, err := r.check(ctx, k.Key)
			if err != nil {
				t.Fatal(err)
			}
			if code == 401 {
				t.Logf("replica %d denies the revoked key %v after the revoke", i, time.Since(revoked).Round(time.Millisecond))
				break
			}
			if time.Since(revoked) > 2*time.Second {
				t.Fatalf("replica %d still allows the key 2s after the revoke", i)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if strings.Contains(replicas[0].logs.String()+replicas[1].logs.String(), k.Key[7:33]) {
		t.Fatal("a replica logged key material")
	}
}

// TestVaultOutageUnderLoad hangs, kills and restarts a Vault under a bounded loop of
// checks: a key seen before keeps working (stale), an unseen key gets a 503, nothing is
// a gRPC error or misses Envoy's 200 ms deadline, and all recovers without a restart.
func TestVaultOutageUnderLoad(t *testing.T) {
	v, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	base := vaulttest.UniquePath(t)
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  path: %s\n  lookup_timeout: 100ms\ncache:\n  ttl: 1s\n  stale_for: 1h\n  poll_interval: 200ms\n", base))
	seen := createKey(t, v, base)
	unseen := createKey(t, v, base)
	// Keep the records, to put them back into the restarted (empty) dev server.
	store, err := vaultstore.New(vaultstore.Config{Client: v.Client(t, nil), Path: base})
	if err != nil {
		t.Fatal(err)
	}
	var records []authz.Record
	for _, id := range []string{seen.ID, unseen.ID} {
		rec, err := store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, rec)
	}
	r := startReplica(t, v, cfg)

	check := func(key string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // Envoy's default
		defer cancel()
		return r.check(ctx, key)
	}
	if code, err := check(seen.Key); err != nil || code != 200 {
		t.Fatalf("before the outage: %d %v", code, err)
	}

	// A bounded loop of checks with the seen key runs through the whole outage.
	var stop atomic.Bool
	var sent, failures atomic.Int64
	var firstFailure atomic.Value
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for i := 0; i < 100_000 && !stop.Load(); i++ {
			code, err := check(seen.Key)
			sent.Add(1)
			if err != nil || code != 200 {
				failures.Add(1)
				firstFailure.CompareAndSwap(nil, fmt.Sprintf("status %d, error %v", code, err))
			}
		}
	}()
	time.Sleep(1200 * time.Millisecond) // let the seen key's TTL pass: checks now need Vault

	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	if code, err := check(unseen.Key); err != nil || code != 503 {
		t.Fatalf("unseen key, Vault hung: %d %v; want a 503 inside the deadline", code, err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	v.Kill()
	if code, err := check(unseen.Key); err != nil || code != 503 {
		t.Fatalf("unseen key, Vault down: %d %v", code, err)
	}
	time.Sleep(300 * time.Millisecond)
	// The load stops while Vault restarts: a dev server comes back empty, and until the
	// records are put back a lookup would rightly find the key unknown.
	stop.Store(true)
	<-loopDone
	t.Logf("%d checks with the seen key during the outage, %d failed", sent.Load(), failures.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d of %d checks of a cached key failed during the outage; first: %v", failures.Load(), sent.Load(), firstFailure.Load())
	}
	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, rec := range records {
		if err := store.Create(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, err := check(unseen.Key)
		if err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Vault came back: %d %v", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 100 {
		if code, err := check(seen.Key); err != nil || code != 200 {
			t.Fatalf("after recovery: %d %v", code, err)
		}
	}
}

// TestGracefulShutdown stops serve while a check is in flight (waiting on a hung
// Vault): health turns NOT_SERVING at once, and the check still gets its decision.
func TestGracefulShutdown(t *testing.T) {
	v, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	base := vaulttest.UniquePath(t)
	k := createKey(t, v, base)
	cfg := writeConfig(t, fmt.Sprintf("vault:\n  path: %s\n  lookup_timeout: 5s\nshutdown_delay: 1s\nshutdown_grace: 10s\n", base))
	grpcAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &safebuf.Buffer{}
	served := make(chan error, 1)
	go func() {
		served <- run(ctx, []string{"serve", "--config", cfg, "--grpc-addr", grpcAddr, "--http-addr", "", "--admin-addr", ""}, logs, logs)
	}()
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	deadline := time.Now().Add(15 * time.Second)
	for status() != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatalf("never serving:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := &replica{client: authv3.NewAuthorizationClient(conn)}

	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	inflight := make(chan error, 1)
	go func() {
		code, err := r.check(context.Background(), k.Key)
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		inflight <- err
	}()
	time.Sleep(300 * time.Millisecond) // the check is now waiting on Vault
	cancel()
	deadline = time.Now().Add(time.Second) // the shutdown delay: health must flip inside it
	for status() != healthpb.HealthCheckResponse_NOT_SERVING {
		if time.Now().After(deadline) {
			t.Fatal("health did not turn NOT_SERVING during the shutdown delay")
		}
		select {
		case err := <-inflight:
			t.Fatalf("the check finished (%v) before health turned NOT_SERVING", err)
		default:
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := <-inflight; err != nil {
		t.Fatalf("in-flight check: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// TestSharedRateLimitAcrossReplicas runs two keygate processes with one Redis: the
// limit (burst 5) holds for the sum of their traffic.
func TestSharedRateLimitAcrossReplicas(t *testing.T) {
	base := vaulttest.UniquePath(t)
	srv := redistest.Start(t)
	cfg := writeConfig(t, fmt.Sprintf(`vault:
  path: %s
rate_limits:
  backend: redis
  default_plan: standard
  plans:
    standard: {per_minute: 6, burst: 5}
  redis:
    address: %s
    prefix: "%s:"
policy:
  deny_unmatched: true
  routes:
  - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
`, base, srv.Addr, base))
	k := createKey(t, vault(t), base)
	replicas := []*replica{startReplica(t, vault(t), cfg), startReplica(t, vault(t), cfg)}
	counts := map[int]int{}
	for i := range 12 {
		code, err := replicas[i%2].check(context.Background(), k.Key)
		if err != nil {
			t.Fatal(err)
		}
		counts[code]++
	}
	// The key has no scopes: the route refuses it with a 403 before any limit counts.
	if counts[403] != 12 {
		t.Fatalf("statuses %v, want 12 × 403 from the route's scope", counts)
	}
	k2 := createKey(t, vault(t), base, "models:read")
	counts = map[int]int{}
	for i := range 12 {
		code, err := replicas[i%2].check(context.Background(), k2.Key)
		if err != nil {
			t.Fatal(err)
		}
		counts[code]++
	}
	if counts[200] != 5 || counts[429] != 7 {
		t.Fatalf("statuses over two replicas %v, want 5 × 200 (the shared burst) and 7 × 429", counts)
	}
}

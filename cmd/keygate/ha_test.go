package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/redistest"
	"github.com/keygate/keygate/internal/vaultcluster"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

// The tests in this file start a three-node Vault cluster, Redis Sentinel or Redis
// Cluster, and many keygate processes: they run under `make test-ha` (KEYGATE_HA=1)
// only, not in `make test`.
func haOnly(t *testing.T) {
	t.Helper()
	if os.Getenv("KEYGATE_HA") == "" {
		t.Skip("set KEYGATE_HA=1 (make test-ha) to run the scale-out tests")
	}
}

// haConfig writes a config for the cluster's three nodes under base, with extra YAML.
func haConfig(t *testing.T, c *vaultcluster.Cluster, base, extra string) string {
	t.Helper()
	return writeConfig(t, fmt.Sprintf("vault:\n  addresses: [%s]\n  path: %s\n%s", strings.Join(c.Addresses(), ", "), base, extra))
}

// haCLI runs a keys command in-process against the cluster through the config file.
func haCLI(t *testing.T, c *vaultcluster.Cluster, cfg string, args ...string) (string, string, error) {
	t.Helper()
	t.Setenv("VAULT_ADDR", "")
	t.Setenv("VAULT_TOKEN", c.Token)
	return cli(t, append([]string{args[0], args[1], "--config", cfg}, args[2:]...)...)
}

func haCreate(t *testing.T, c *vaultcluster.Cluster, cfg, name string, extra ...string) createdKey {
	t.Helper()
	out, stderr, err := haCLI(t, c, cfg, append([]string{"keys", "create", "--owner", "acct_ha", "--name", name, "--json"}, extra...)...)
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, stderr)
	}
	var k createdKey
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatal(err)
	}
	return k
}

// haStore is a Store on the cluster through the failover client, for checks.
func haStore(t *testing.T, c *vaultcluster.Cluster, base string) *vaultstore.Store {
	t.Helper()
	var ferr error
	cl, err := c.NewClient(c.Nodes[0].Addr, func(next http.RoundTripper) http.RoundTripper {
		f, err := vaultstore.NewFailover(next, c.Addresses(), 0)
		ferr = err
		return f
	})
	if err != nil || ferr != nil {
		t.Fatal(err, ferr)
	}
	s, err := vaultstore.New(vaultstore.Config{Client: cl, Path: base, LookupTimeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitDenied waits until every replica answers 401 for key and returns the longest wait.
func waitDenied(t *testing.T, replicas []*replica, key string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	var longest time.Duration
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				code, err := r.check(ctx, key)
				cancel()
				if err == nil && code == 401 {
					mu.Lock()
					longest = max(longest, time.Since(since))
					mu.Unlock()
					return
				}
				if time.Since(since) > limit {
					t.Errorf("replica %d still answers %d (%v) %v after the revoke", i, code, err, limit)
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return longest
}

// load checks key on every replica in a bounded loop (one check per replica every
// 2 ms) until stop is called, and counts checks and failures (anything but 200).
type load struct {
	served, failed atomic.Int64
	stop           chan struct{}
	wg             sync.WaitGroup
}

func startLoad(replicas []*replica, key string) *load {
	l := &load{stop: make(chan struct{})}
	for _, r := range replicas {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				code, err := r.check(ctx, key)
				cancel()
				l.served.Add(1)
				if err != nil || code != 200 {
					l.failed.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) end() { close(l.stop); l.wg.Wait() }

// TestVaultClusterFailoverUnderLoad kills the active Vault node under load, twice.
func TestVaultClusterFailoverUnderLoad(t *testing.T) {
	haOnly(t)
	c := vaultcluster.Start(t)
	base := vaulttest.UniquePath(t)
	cfg := haConfig(t, c, base, "cache:\n  ttl: 1h\n  poll_interval: 500ms\n")
	// Keys for rotate-due, in their own path so the others are not rotated.
	rotBase := base + "-rot"
	rotCfg := haConfig(t, c, rotBase, "")
	target := "vault:secret/" + base + "-apps/{owner}/{name}#api_key"
	var rotIDs []string
	for i := range 30 {
		rotIDs = append(rotIDs, haCreate(t, c, rotCfg, fmt.Sprintf("app %d", i)).ID)
	}
	rotCreated := time.Now()
	cached := haCreate(t, c, cfg, "cached")
	revokeMe := haCreate(t, c, cfg, "revoked after the failover")
	var uncached []createdKey
	for i := range 4 {
		uncached = append(uncached, haCreate(t, c, cfg, fmt.Sprintf("uncached %d", i)))
	}
	env := []string{"VAULT_ADDR=", "VAULT_TOKEN=" + c.Token}
	replicas := []*replica{startReplicaEnv(t, env, cfg), startReplicaEnv(t, env, cfg)}
	for i, r := range replicas {
		for _, k := range []createdKey{cached, revokeMe} {
			if code, err := r.check(context.Background(), k.Key); err != nil || code != 200 {
				t.Fatalf("replica %d before the failover: %d %v", i, code, err)
			}
		}
	}
	// rotate-due rotates keys at least 10 s old, so that the successors made by the
	// interrupted run are not due when it is run again.
	time.Sleep(time.Until(rotCreated.Add(11 * time.Second)))
	rotate := func() *exec.Cmd {
		cmd := exec.Command(keygateBinary(t), "keys", "rotate-due", "--config", rotCfg, "--older-than", "10s",
			"--grace", "1h", "--deliver", target)
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}

	for round := range 2 {
		active := c.Active()
		if active < 0 {
			t.Fatal("no active node")
		}
		l := startLoad(replicas, cached.Key)
		var rot *exec.Cmd
		var rotOut strings.Builder
		if round == 0 {
			rot = rotate()
			rot.Stdout, rot.Stderr = &rotOut, &rotOut
			if err := rot.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(150 * time.Millisecond) // a few rotations in
		} else {
			time.Sleep(300 * time.Millisecond)
		}
		killed := time.Now()
		c.Kill(active)
		// An uncached key: 503 until a leader is elected, then allowed.
		probe := uncached[2*round]
		var n503, nOther int
		var window time.Duration
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			for time.Since(killed) < 60*time.Second {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				code, err := replicas[0].check(ctx, probe.Key)
				cancel()
				switch {
				case err == nil && code == 200:
					window = time.Since(killed)
					return
				case err == nil && code == 503:
					n503++
				default:
					nOther++
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		next, err := c.WaitActive(60*time.Second, active)
		if err != nil {
			t.Fatal(err)
		}
		elected := time.Since(killed)
		<-probed
		if rot != nil {
			rotErr := rot.Wait()
			t.Logf("rotate-due during the failover: %v", rotErr)
		}
		l.end()
		if nOther > 0 || window == 0 {
			t.Fatalf("uncached key: %d answers neither 503 nor 200; allowed after %v", nOther, window)
		}
		if f := l.failed.Load(); f != 0 {
			t.Fatalf("%d of %d checks of a cached key failed during the failover", f, l.served.Load())
		}
		// After the election every replica allows an unseen key.
		for i, r := range replicas {
			if code, err := r.check(context.Background(), uncached[2*round+1].Key); err != nil || code != 200 {
				t.Fatalf("replica %d, unseen key after the election: %d %v", i, code, err)
			}
		}
		t.Logf("round %d: killed %s; %s active after %v; uncached key: %d × 503, allowed %v after the kill; cached key: %d checks, 0 failed",
			round+1, c.Nodes[active].ID, c.Nodes[next].ID, elected.Round(time.Millisecond), n503, window.Round(time.Millisecond), l.served.Load())

		if round == 0 {
			if _, stderr, err := haCLI(t, c, cfg, "keys", "revoke", revokeMe.ID); err != nil {
				t.Fatalf("revoke after the failover: %v\n%s", err, stderr)
			}
			took := waitDenied(t, replicas, revokeMe.Key, time.Now(), 2*time.Second)
			t.Logf("revoke after the failover denied by every replica within %v", took.Round(time.Millisecond))
			out, err := rotate().CombinedOutput()
			if err != nil {
				t.Fatalf("rotate-due re-run: %v\n%s", err, out)
			}
			checkOneSuccessor(t, haStore(t, c, rotBase), rotIDs)
			if err := c.Restart(active); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkOneSuccessor checks that every old key was replaced and has exactly one live
// successor of its name.
func checkOneSuccessor(t *testing.T, s *vaultstore.Store, ids []string) {
	t.Helper()
	all, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range ids {
		var name, replacedBy string
		for _, r := range all {
			if r.ID == id {
				name, replacedBy = r.Name, r.ReplacedBy
			}
		}
		if replacedBy == "" {
			t.Fatalf("%s not rotated after the re-run", id)
		}
		live := 0
		for _, r := range all {
			if r.Name == name && r.ID != id && r.Live(now) {
				live++
			}
		}
		if live != 1 {
			t.Fatalf("%d live successors of %s, want 1", live, id)
		}
	}
}

// redisFailover runs two fail-closed replicas and one fail-open replica on one Redis
// (redisYAML names it), fails its master under load with kill, and checks that
// on_failure is honoured during the failover, that limits resume and that the two
// replicas share one limit afterwards.
func redisFailover(t *testing.T, redisYAML string, kill func(bucket string)) {
	t.Helper()
	base := vaulttest.UniquePath(t)
	config := func(onFailure string) string {
		return writeConfig(t, fmt.Sprintf(`vault:
  path: %s
rate_limits:
  backend: redis
  default_plan: big
  plans:
    big: {per_minute: 6000000, burst: 1000000}
    small: {per_minute: 6, burst: 5}
  redis:
%s
    prefix: "%s:"
    on_failure: %s
`, base, redisYAML, base, onFailure))
	}
	closedCfg, openCfg := config("closed"), config("open")
	t.Setenv("VAULT_ADDR", vault(t).Addr)
	t.Setenv("VAULT_TOKEN", vault(t).Token)
	mk := func(plan string) createdKey {
		out, stderr, err := cli(t, "keys", "create", "--config", closedCfg, "--owner", "acct_rl", "--name", "key "+plan, "--plan", plan, "--json")
		if err != nil {
			t.Fatalf("keys create: %v\n%s", err, stderr)
		}
		var k createdKey
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	big, small := mk("big"), mk("small")
	closed := []*replica{startReplica(t, vault(t), closedCfg), startReplica(t, vault(t), closedCfg)}
	open := startReplica(t, vault(t), openCfg)
	type counts struct {
		ok, unavailable, other atomic.Int64
		first                  atomic.Value
	}
	var cc, oc counts
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, x := range []struct {
		r *replica
		c *counts
	}{{closed[0], &cc}, {open, &oc}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				code, err := x.r.check(ctx, big.Key)
				cancel()
				switch {
				case err == nil && code == 200:
					x.c.ok.Add(1)
				case err == nil && code == 503:
					x.c.unavailable.Add(1)
				default:
					if x.c.other.Add(1) == 1 {
						x.c.first.Store(fmt.Sprintf("%d %v", code, err))
					}
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	killed := time.Now()
	kill("rate:" + base + ":key:" + big.ID)
	// The failover is over for a replica when it allows again; each replica's Redis
	// client finds the new master on its own.
	var window time.Duration
	for _, r := range closed {
		for time.Since(killed) < 60*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			code, err := r.check(ctx, big.Key)
			cancel()
			if err == nil && code == 200 {
				window = time.Since(killed)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if window == 0 {
		t.Fatalf("limits did not resume within 60 s of the master's failure:\n%s", closed[1].logs)
	}
	t.Logf("master failed: fail-closed replicas allow again after %v; fail-closed: %d × 200, %d × 503; fail-open: %d × 200, %d × 503",
		window.Round(time.Millisecond), cc.ok.Load(), cc.unavailable.Load(), oc.ok.Load(), oc.unavailable.Load())
	if cc.other.Load()+oc.other.Load() != 0 {
		t.Fatalf("%d answers were neither 200 nor 503 (fail-closed: %v; fail-open: %v)", cc.other.Load()+oc.other.Load(), cc.first.Load(), oc.first.Load())
	}
	if oc.unavailable.Load() != 0 {
		t.Fatalf("the fail-open replica refused %d checks during the failover", oc.unavailable.Load())
	}
	if cc.unavailable.Load() == 0 {
		t.Fatal("the fail-closed replica refused nothing while the master was down")
	}
	got := map[int]int{}
	for i := range 12 {
		code, err := closed[i%2].check(context.Background(), small.Key)
		if err != nil {
			t.Fatal(err)
		}
		got[code]++
	}
	if got[200] != 5 || got[429] != 7 {
		t.Fatalf("after the failover, statuses over two replicas %v, want 5 × 200 (the shared burst) and 7 × 429", got)
	}
}

func TestRedisSentinelFailover(t *testing.T) {
	haOnly(t)
	s := redistest.StartSentinel(t)
	yaml := fmt.Sprintf("    mode: sentinel\n    master_name: %s\n    addresses: [%s]", s.MasterName, strings.Join(s.Sentinels, ", "))
	redisFailover(t, yaml, func(string) {
		old := s.MasterNode(t)
		old.Kill()
		s.WaitMaster(t, old.Addr, 60*time.Second)
	})
}

func TestRedisClusterFailover(t *testing.T) {
	haOnly(t)
	c := redistest.StartCluster(t)
	yaml := fmt.Sprintf("    mode: cluster\n    addresses: [%s]", strings.Join(c.Addrs(), ", "))
	redisFailover(t, yaml, func(bucket string) { c.MasterOf(t, bucket).Kill() })
}

// auditCounts counts the requests in a Vault file audit log by kind: the change feed,
// usage records, key records and the rest, from line skip on. It returns the counts and
// the number of lines read.
func auditCounts(t *testing.T, path, base string, skip int) (map[string]int, int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	counts := map[string]int{}
	for _, line := range lines[min(skip, len(lines)):] {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Path      string `json:"path"`
				Operation string `json:"operation"`
			} `json:"request"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Type != "request" {
			continue
		}
		p := e.Request.Path
		switch {
		case p == "secret/data/"+base+"/changes":
			counts["feed "+e.Request.Operation]++
		case strings.HasPrefix(p, "secret/data/"+base+"/usage/"):
			counts["usage "+e.Request.Operation]++
		case strings.HasPrefix(p, "secret/data/"+base+"/"):
			counts["records "+e.Request.Operation]++
		default:
			counts["other "+e.Request.Operation]++
		}
	}
	return counts, len(lines)
}

// TestTenReplicas runs 10 keygate processes on one Vault cluster and one Redis: it
// measures what they ask of Vault (file audit device) and Redis (INFO commandstats)
// over a fixed run, checks that a revoke reaches all 10 within 2 s, and that 100
// concurrent revocations from separate `keys revoke` processes all land in the change
// feed and are enforced by every replica.
func TestTenReplicas(t *testing.T) {
	haOnly(t)
	const (
		replicasN = 10
		revokeN   = 100
		run       = 10 * time.Second
		rate      = 20 // checks/s per replica during the measured run
	)
	c := vaultcluster.Start(t)
	rdb := redistest.Start(t)
	auditLog := t.TempDir() + "/audit.log"
	if err := c.EnableAudit(auditLog); err != nil {
		t.Fatal(err)
	}
	base := vaulttest.UniquePath(t)
	cfg := haConfig(t, c, base, fmt.Sprintf(`usage_flush: 5s
cache:
  ttl: 1h
  poll_interval: 500ms
rate_limits:
  backend: redis
  default_plan: big
  plans:
    big: {per_minute: 6000000, burst: 1000000}
  redis:
    address: %s
    prefix: "%s:"
`, rdb.Addr, base))
	probe := haCreate(t, c, cfg, "probe")
	var doomed []createdKey
	for i := range revokeN {
		doomed = append(doomed, haCreate(t, c, cfg, fmt.Sprintf("doomed %d", i)))
	}
	env := []string{"VAULT_ADDR=", "VAULT_TOKEN=" + c.Token}
	var replicas []*replica
	for range replicasN {
		replicas = append(replicas, startReplicaEnv(t, env, cfg))
	}
	ctx := context.Background()
	for i, r := range replicas {
		for _, k := range append([]createdKey{probe}, doomed...) {
			// A miss may get a 503 when its read misses the 150 ms lookup budget on a
			// busy machine; warming up is not what this test measures.
			code, err := r.check(ctx, k.Key)
			for try := 0; err == nil && code == 503 && try < 5; try++ {
				time.Sleep(100 * time.Millisecond)
				code, err = r.check(ctx, k.Key)
			}
			if err != nil || code != 200 {
				t.Fatalf("replica %d, key %s before the revokes: %d %v", i, k.ID, code, err)
			}
		}
	}
	// Let the warm-up's usage flushes pass, then measure a fixed run.
	time.Sleep(6 * time.Second)
	_, skip := auditCounts(t, auditLog, base, 0)
	before := rdb.CommandCalls(t)
	start := time.Now()
	var checks atomic.Int64
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Second / rate)
			defer tick.Stop()
			for time.Since(start) < run {
				<-tick.C
				if code, err := r.check(ctx, probe.Key); err != nil || code != 200 {
					t.Errorf("check during the run: %d %v", code, err)
					return
				}
				checks.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	counts, _ := auditCounts(t, auditLog, base, skip)
	after := rdb.CommandCalls(t)
	redisCalls := map[string]int64{}
	for cmd, n := range after {
		if d := n - before[cmd]; d > 0 && cmd != "info" {
			redisCalls[cmd] = d
		}
	}
	secs := elapsed.Seconds()
	feedModel := float64(replicasN) * secs / 0.5
	usageModel := float64(replicasN) * 2 * (secs / 5) // one key used: a read and a write per flush
	t.Logf("measured over %v, %d replicas, %d checks (%.0f/s): Vault requests %v; model: feed reads %.0f, usage requests %.0f, record reads 0",
		elapsed.Round(time.Millisecond), replicasN, checks.Load(), float64(checks.Load())/secs, counts, feedModel, usageModel)
	var evals int64
	for cmd, n := range redisCalls {
		if strings.HasPrefix(cmd, "eval") {
			evals += n
		}
	}
	// commandstats also counts the commands the GCRA script runs inside Redis (get,
	// set, time): they are not round trips.
	t.Logf("Redis commands %v: %.2f script calls per check (model: 1)", redisCalls, float64(evals)/float64(checks.Load()))

	// One revoke reaches all 10 within 2 s.
	if _, stderr, err := haCLI(t, c, cfg, "keys", "revoke", probe.ID); err != nil {
		t.Fatalf("revoke: %v\n%s", err, stderr)
	}
	took := waitDenied(t, replicas, probe.Key, time.Now(), 2*time.Second)
	t.Logf("one revoke denied by all %d replicas within %v", replicasN, took.Round(time.Millisecond))

	// 100 revocations from 100 processes, 10 at a time.
	sem := make(chan struct{}, 10)
	var failed atomic.Int64
	revStart := time.Now()
	for _, k := range doomed {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cmd := exec.Command(keygateBinary(t), "keys", "revoke", "--config", cfg, k.ID)
			cmd.Env = append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				failed.Add(1)
				t.Errorf("keys revoke %s: %v\n%s", k.ID, err, out)
			}
		}()
	}
	wg.Wait()
	revoked := time.Now()
	t.Logf("%d revocations from separate processes, 10 at a time, in %v", revokeN, revoked.Sub(revStart).Round(time.Millisecond))
	if failed.Load() > 0 {
		t.Fatalf("%d revocations failed", failed.Load())
	}
	feed, err := haStore(t, c, base).ReadChanges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range doomed {
		if _, ok := feed.Recent[authzHash(k.Key)]; !ok {
			t.Fatalf("revocation of %s is not in the change feed", k.ID)
		}
	}
	var longest time.Duration
	for _, k := range doomed {
		longest = max(longest, waitDenied(t, replicas, k.Key, revoked, 2*time.Second))
	}
	t.Logf("all %d revocations in the change feed; every replica denies every revoked key (checked one after another: done %v after the last revoke)",
		revokeN, longest.Round(time.Millisecond))
}

func authzHash(key string) authz.KeyHash { return authz.HashKey(key) }

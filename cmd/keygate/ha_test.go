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
	// The failover is over when the fail-closed replica allows again.
	var window time.Duration
	for time.Since(killed) < 60*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		code, err := closed[1].check(ctx, big.Key)
		cancel()
		if err == nil && code == 200 {
			window = time.Since(killed)
			break
		}
		time.Sleep(20 * time.Millisecond)
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

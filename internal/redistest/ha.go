package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a master, one replica and three sentinels (Debian's redis-server and
// redis-sentinel), all on loopback. The sentinels declare the master down after 1 s
// without an answer and need two of three to agree (quorum 2).
type Sentinel struct {
	MasterName string
	Sentinels  []string  // sentinel addresses
	Nodes      []*Server // the data nodes: the first master, then its replica
	sentinels  []*Server
}

// StartSentinel starts the set and waits until every sentinel knows the replica and the
// other sentinels, so a failover can happen.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	master := Start(t)
	replica := start(t, "redis-server", "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	waitReplicaSynced(t, replica, 30*time.Second)
	s := &Sentinel{MasterName: "keygate", Nodes: []*Server{master, replica}}
	for i := range 3 {
		conf := filepath.Join(t.TempDir(), fmt.Sprintf("sentinel%d.conf", i))
		body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\n"+
			"sentinel parallel-syncs %[1]s 1\n", s.MasterName, master.Port)
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		sen := start(t, "redis-sentinel", conf)
		s.sentinels = append(s.sentinels, sen)
		s.Sentinels = append(s.Sentinels, sen.Addr)
	}
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
		for {
			m, err := sc.Master(ctx, s.MasterName).Result()
			if err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" {
				break
			}
			if time.Now().After(deadline) {
				sc.Close()
				t.Fatalf("sentinel %s not ready: %v %v", addr, m, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		sc.Close()
	}
	return s
}

// Master returns the master's address as the sentinels report it.
func (s *Sentinel) Master(ctx context.Context) (string, error) {
	var lastErr error
	for _, addr := range s.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second})
		a, err := sc.GetMasterAddrByName(ctx, s.MasterName).Result()
		sc.Close()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1], nil
		}
		lastErr = err
	}
	return "", fmt.Errorf("no sentinel names a master: %v", lastErr)
}

// MasterNode returns the data node that is the master now.
func (s *Sentinel) MasterNode(t testing.TB) *Server {
	t.Helper()
	addr, err := s.Master(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	t.Fatalf("master %s is none of the nodes", addr)
	return nil
}

// WaitMaster waits until the sentinels name a master other than old and it accepts
// writes, and returns its address.
func (s *Sentinel) WaitMaster(t testing.TB, old string, limit time.Duration) string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if addr, err := s.Master(ctx); err == nil && addr != old {
			c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
			role, err := c.Do(ctx, "ROLE").Slice()
			c.Close()
			if err == nil && len(role) > 0 && role[0] == "master" {
				return addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no new master after %s", limit)
	return ""
}

// Cluster is a Redis Cluster of three masters, each with one replica, on loopback.
// A node is declared failed after 1 s without an answer (cluster-node-timeout) and its
// replica takes over its slots.
type Cluster struct {
	Nodes []*Server
}

// StartCluster starts six nodes, creates the cluster with redis-cli --cluster create and
// waits until every node reports cluster_state:ok.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	c := &Cluster{}
	var addrs []string
	for range 6 {
		n := start(t, "redis-server", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000")
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.Nodes {
		c.waitState(t, n, 30*time.Second)
	}
	// A replica that has not synced with its master yet cannot replace it.
	for _, n := range c.Nodes {
		waitReplicaSynced(t, n, 30*time.Second)
	}
	return c
}

// waitReplicaSynced waits until n, if it is a replica, has its link to its master up.
func waitReplicaSynced(t testing.TB, n *Server, limit time.Duration) {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: n.Addr})
	defer cl.Close()
	deadline := time.Now().Add(limit)
	for {
		info, err := cl.Info(context.Background(), "replication").Result()
		if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: replica not synced after %s: %v %s", n.Addr, limit, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addrs returns every node's address.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.Addr)
	}
	return out
}

func (c *Cluster) waitState(t testing.TB, n *Server, limit time.Duration) {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: n.Addr})
	defer cl.Close()
	deadline := time.Now().Add(limit)
	for {
		info, err := cl.ClusterInfo(context.Background()).Result()
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: cluster not ok after %s: %v %s", n.Addr, limit, err, info)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MasterOf returns the node that serves key's slot now.
func (c *Cluster) MasterOf(t testing.TB, key string) *Server {
	t.Helper()
	ctx := context.Background()
	for _, n := range c.Nodes {
		select {
		case <-n.done:
			continue
		default:
		}
		cl := redis.NewClient(&redis.Options{Addr: n.Addr})
		slot, err := cl.ClusterKeySlot(ctx, key).Result()
		slots, err2 := cl.ClusterSlots(ctx).Result()
		cl.Close()
		if err != nil || err2 != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, m := range c.Nodes {
					if m.Addr == s.Nodes[0].Addr {
						return m
					}
				}
			}
		}
	}
	t.Fatalf("no node serves the slot of %q", key)
	return nil
}

// CommandCalls returns the server's calls per command (INFO commandstats), such as
// "evalsha": 120.
func (s *Server) CommandCalls(t testing.TB) map[string]int64 {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer cl.Close()
	info, err := cl.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_evalsha:calls=12,usec=345,...
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "calls="); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return out
}

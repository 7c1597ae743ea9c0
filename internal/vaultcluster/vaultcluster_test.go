package vaultcluster

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"
)

// TestCluster is heavy (three Vault servers); it runs under `make test-ha` only.
func TestCluster(t *testing.T) {
	if os.Getenv("KEYGATE_HA") == "" {
		t.Skip("set KEYGATE_HA=1 (make test-ha) to start a three-node Vault cluster")
	}
	c := Start(t)
	active := c.Active()
	if active != 0 {
		t.Fatalf("active node %d after set-up, want node 1", active)
	}
	// Every node serves reads and writes: standbys forward them to the active node.
	ctx := context.Background()
	for i, n := range c.Nodes {
		cl, err := c.NewClient(n.Addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.KVv2("secret").Put(ctx, "t/x", map[string]any{"n": i}); err != nil {
			t.Fatalf("%s: %v", n.ID, err)
		}
	}
	start := time.Now()
	c.Kill(active)
	next, err := c.WaitActive(30*time.Second, active)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s active %v after killing %s", c.Nodes[next].ID, time.Since(start).Round(time.Millisecond), c.Nodes[active].ID)
	cl, err := c.NewClient(c.Nodes[next].Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	sec, err := cl.KVv2("secret").Get(ctx, "t/x")
	if err != nil || sec.VersionMetadata.Version != 3 {
		t.Fatalf("after failover: %v %+v", err, sec)
	}
	if err := c.Restart(active); err != nil {
		t.Fatal(err)
	}
	if h := c.Nodes[active].Health(); h != http.StatusTooManyRequests {
		t.Fatalf("restarted node health %d, want 429 (standby)", h)
	}
	if err := c.Pause(next); err != nil {
		t.Fatal(err)
	}
	if err := c.Resume(next); err != nil {
		t.Fatal(err)
	}
}

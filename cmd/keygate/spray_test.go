package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/authz"
)

// sprayRun sprays invented, checksum-valid keys from one client address at a fresh
// keygate serve while another address checks keys no replica has cached yet. It
// returns how many of those were allowed and the sprayer's statuses.
func sprayRun(t *testing.T, cacheConfig string, spray, valid int) (allowed int, statuses map[int]int, auditFile, httpAddr string) {
	t.Helper()
	base := useVault(t)
	auditFile = filepath.Join(t.TempDir(), "audit.log")
	cfg := writeConfig(t, fmt.Sprintf("vault: {path: %s}\naudit_log: %s\ncache: %s\n", base, auditFile, cacheConfig))
	var keys []string
	for range valid {
		keys = append(keys, createKey(t, vault(t), base).Key)
	}
	grpcAddr, httpAddr, _ := startServe(t, "--config", cfg)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	check := func(ip, key string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/v1/models", Headers: map[string]string{"authorization": "Bearer " + key}}}}})
		if err != nil {
			t.Errorf("check: %v", err)
			return 0
		}
		if resp.GetOkResponse() != nil {
			return 200
		}
		return int(resp.GetDeniedResponse().GetStatus().GetCode())
	}
	f, err := authz.NewFormat("mgx-sk-")
	if err != nil {
		t.Fatal(err)
	}
	var (
		next   atomic.Int64
		mu     sync.Mutex
		wg     sync.WaitGroup
		okKeys atomic.Int64
	)
	statuses = map[int]int{}
	for range 8 { // the sprayer: 8 concurrent streams from one address
		wg.Go(func() {
			for next.Add(1) <= int64(spray) {
				k, err := f.Generate(nil)
				if err != nil {
					t.Error(err)
					return
				}
				code := check("192.0.2.1", k)
				mu.Lock()
				statuses[code]++
				mu.Unlock()
			}
		})
	}
	// The other client checks its keys while the spray runs: one key per 1/valid of it.
	for i, k := range keys {
		for next.Load() < int64((i+1)*spray/(valid+1)) {
			time.Sleep(time.Millisecond)
		}
		if check("198.51.100.7", k) == 200 {
			okKeys.Add(1)
		}
	}
	wg.Wait()
	return int(okKeys.Load()), statuses, auditFile, httpAddr
}

// TestSprayFairness: during a spray of 3,000 invented keys from one address, another
// address's 30 new valid keys are all allowed: the sprayer spends its own share of the
// miss budget, is then refused early with 429 and audited as auth.spray_suspected.
// The same spray against a global-only budget (each client's share as large as the
// whole) is run for comparison; its figure is logged, not asserted.
func TestSprayFairness(t *testing.T) {
	const spray, valid = 3000, 30
	// The same global budget both times; the other client's share fits its 30 new keys.
	global := "{miss_rate: 50, miss_burst: 100, source_miss_rate: 50, source_miss_burst: 100, spray_failures: -1}"
	fair := "{miss_rate: 50, miss_burst: 100, source_miss_rate: 5, source_miss_burst: 40, spray_failures: 30, spray_window: 1m}"

	allowed, statuses, auditFile, httpAddr := sprayRun(t, fair, spray, valid)
	t.Logf("fair budget: %d/%d new valid keys of another client allowed during the spray (%.0f%%); the sprayer got %v",
		allowed, valid, 100*float64(allowed)/valid, statuses)
	if allowed != valid {
		t.Errorf("only %d of %d valid keys allowed during the spray", allowed, valid)
	}
	if statuses[429] == 0 || statuses[200] != 0 {
		t.Errorf("the sprayer's statuses %v: want 429s (refused early) and no allow", statuses)
	}
	raw, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), `"event":"auth.spray_suspected"`); n != 1 ||
		!strings.Contains(string(raw), `"event":"auth.spray_suspected","status":429,"source":"192.0.2.1"`) {
		t.Errorf("%d auth.spray_suspected events; audit log:\n%.2000s", n, raw)
	}
	if strings.Contains(string(raw), "mgx-sk-") {
		t.Error("a key in the audit log")
	}
	m := scrape(t, "http://"+httpAddr+"/metrics")
	if v, _ := sum(m, "keygate_cache_spray_suspected_total"); v != 1 {
		t.Errorf("keygate_cache_spray_suspected_total = %v, want 1", v)
	}
	if v, _ := sum(m, "keygate_cache_source_refused_total"); v != float64(statuses[429]) {
		t.Errorf("keygate_cache_source_refused_total = %v, want %d", v, statuses[429])
	}

	allowed, statuses, _, _ = sprayRun(t, global, spray, valid)
	t.Logf("global-only budget (as before): %d/%d allowed (%.0f%%); the sprayer got %v", allowed, valid, 100*float64(allowed)/valid, statuses)
}

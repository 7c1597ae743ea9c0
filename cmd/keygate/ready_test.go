package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/internal/safebuf"
)

// TestReadyzSaysWhy: serve started while Vault is unreachable answers /readyz with the
// preflight's reason (no password of the address in it). When Vault comes back, a
// replica configured right turns ready and its reason is gone; one with a wrong mount
// stays NOT_SERVING with the fix, instead of turning ready and denying every key.
func TestReadyzSaysWhy(t *testing.T) {
	base := useVault(t)
	vaultURL, err := url.Parse(vault(t).Addr)
	if err != nil {
		t.Fatal(err)
	}
	dead := freeAddr(t) // nothing listens here until the relay below starts
	t.Setenv("VAULT_ADDR", "http://ops:hunter2pw@"+dead)

	type replica struct {
		grpc, http string
		logs       *safebuf.Buffer
	}
	start := func(args ...string) replica {
		r := replica{grpc: freeAddr(t), http: freeAddr(t), logs: &safebuf.Buffer{}}
		launchServe(t, r.logs, append([]string{"--grpc-addr", r.grpc, "--http-addr", r.http, "--admin-addr", "",
			"--vault-path", base}, args...)...)
		return r
	}
	readyz := func(r replica) (int, string) {
		resp, err := http.Get("http://" + r.http + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	// until polls /readyz until want holds, bounded: readiness changes within seconds.
	until := func(r replica, what string, want func(int, string) bool) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			status, body := readyz(r)
			if want(status, body) {
				return body
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: /readyz answers %d %q\n%s", what, status, body, r.logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	health := func(r replica) healthpb.HealthCheckResponse_ServingStatus {
		conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(context.Background(),
			&healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}

	good := start()
	wrongMount := start("--vault-mount", "nosuch")
	for _, r := range []replica{good, wrongMount} {
		body := until(r, "Vault unreachable", func(status int, body string) bool { return status == 503 })
		want := "not ready: vault unavailable (key store unavailable): cannot log in to Vault at http://" + dead + ": vault login failed (token): "
		if !strings.HasPrefix(body, want) || strings.Contains(body, "hunter2pw") {
			t.Fatalf("/readyz: %q\nwant it to start %q, without the password", body, want)
		}
		if st := health(r); st == healthpb.HealthCheckResponse_SERVING {
			t.Fatal("SERVING while Vault is unreachable")
		}
	}

	// Vault comes back at the address.
	relay(t, dead, vaultURL.Host)
	until(good, "Vault back", func(status int, body string) bool { return status == 200 && body == "ok" })
	deadline := time.Now().Add(10 * time.Second)
	for health(good) != healthpb.HealthCheckResponse_SERVING {
		if time.Now().After(deadline) {
			t.Fatalf("not SERVING once ready\n%s", good.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	body := until(wrongMount, "Vault back, wrong mount", func(status int, body string) bool {
		return status == 503 && strings.Contains(body, "no secrets engine")
	})
	if want := "not ready: vault misconfigured: no secrets engine is mounted at nosuch/ on http://" + dead +
		": enable KV v2 there (vault secrets enable -path=nosuch kv-v2)"; !strings.HasPrefix(body, want) {
		t.Fatalf("/readyz: %q\nwant it to start %q", body, want)
	}
	if st := health(wrongMount); st == healthpb.HealthCheckResponse_SERVING {
		t.Fatal("a replica with a wrong mount is SERVING")
	}
}

// relay forwards TCP connections from addr to target until the test ends.
func relay(t *testing.T, addr, target string) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, in, out)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(out, in); out.Close() })
			wg.Go(func() { _, _ = io.Copy(in, out); in.Close() })
		}
	})
}

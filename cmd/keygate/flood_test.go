package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestConnectionFloodDoesNotStarveChecks opens 3,000 idle connections to the admin and
// health listeners (capped at 300 each here) while Envoy-shaped gRPC checks, on a
// long-lived and on new connections, and /readyz on new connections are answered
// throughout; every idle connection is closed by the header or idle timeout.
func TestConnectionFloodDoesNotStarveChecks(t *testing.T) {
	const flood = 3000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < 2*flood {
		lim.Cur = min(lim.Max, 2*flood)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < flood+1000 {
			t.Skipf("open file limit %d (%v): too low for the flood", lim.Cur, err)
		}
	}
	base := useVault(t)
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
connections: {max_http: 300, read_header_timeout: 1s, idle_timeout: 1s}
`, base))
	k := createKey(t, vault(t), base)
	adminAddr := freeAddr(t)
	grpcAddr, httpAddr, _ := startServe(t, "--config", cfg, "--admin-addr", adminAddr)

	// A keep-alive connection that made one request and then sits idle.
	keptAlive, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer keptAlive.Close()
	fmt.Fprintf(keptAlive, "GET /healthz HTTP/1.1\r\nHost: keygate\r\n\r\n")
	if n, err := keptAlive.Read(make([]byte, 512)); err != nil || n == 0 {
		t.Fatalf("healthz on a keep-alive connection: %v", err)
	}

	envoy, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer envoy.Close()
	check := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/v1/models", Headers: map[string]string{"x-api-key": k.Key}}}}})
		if err == nil && resp.GetOkResponse() == nil {
			err = errors.New("denied")
		}
		return err
	}
	if err := check(envoy); err != nil {
		t.Fatal(err)
	}
	health := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	readyz := func() error {
		resp, err := health.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	}

	// The flood, from 32 dialers; the probes run until it has been dialled and then
	// until every flood connection has been closed by keygate.
	var (
		conns   = make(chan net.Conn, flood)
		dialErr atomic.Int64
		dialers sync.WaitGroup
		next    atomic.Int64
	)
	for range 32 {
		dialers.Go(func() {
			for {
				i := next.Add(1)
				if i > flood {
					return
				}
				addr := adminAddr
				if i%2 == 0 {
					addr = httpAddr
				}
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					dialErr.Add(1)
					continue
				}
				conns <- c
			}
		})
	}
	stop := make(chan struct{})
	var probes sync.WaitGroup
	var checks, readies, newConnChecks atomic.Int64
	var probeErrs []error
	var mu sync.Mutex
	fail := func(what string, err error) {
		mu.Lock()
		probeErrs = append(probeErrs, fmt.Errorf("%s: %w", what, err))
		mu.Unlock()
	}
	probes.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := check(envoy); err != nil {
				fail("check", err)
			}
			checks.Add(1)
			if err := readyz(); err != nil {
				fail("readyz", err)
			}
			readies.Add(1)
			if i%10 == 0 { // a new gRPC connection, as after an Envoy restart
				conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err == nil {
					err = check(conn)
					conn.Close()
				}
				if err != nil {
					fail("check on a new connection", err)
				}
				newConnChecks.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	dialers.Wait()
	close(conns)

	// Every flood connection is closed by keygate: read until EOF or reset.
	var open sync.WaitGroup
	var notClosed atomic.Int64
	deadline := time.Now().Add(60 * time.Second) // bounds the wait only; the timeouts are 1 s
	for c := range conns {
		open.Go(func() {
			defer c.Close()
			_ = c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				notClosed.Add(1)
			}
		})
	}
	open.Wait()
	// The keep-alive connection is closed by the idle timeout too.
	_ = keptAlive.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, keptAlive); err != nil {
		t.Errorf("the idle keep-alive connection was not closed: %v", err)
	}
	close(stop)
	probes.Wait()

	t.Logf("%d connections dialled (%d dial errors); during the flood: %d checks, %d on new connections, %d /readyz",
		flood-dialErr.Load(), dialErr.Load(), checks.Load(), newConnChecks.Load(), readies.Load())
	for _, err := range probeErrs {
		t.Error(err)
	}
	if n := notClosed.Load(); n > 0 {
		t.Errorf("%d flood connections were still open after a minute", n)
	}
	if checks.Load() == 0 || readies.Load() == 0 || newConnChecks.Load() == 0 {
		t.Fatal("no probe ran during the flood")
	}
	m := scrape(t, "http://"+httpAddr+"/metrics")
	for _, l := range []string{"admin", "http"} {
		if v, _ := sum(m, "keygate_connections_shed_total", `listener="`+l+`"`); v == 0 {
			t.Errorf("no connection shed on the %s listener: the cap was never reached", l)
		}
	}
}

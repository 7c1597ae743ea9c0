// Command soak drives a real "keygate serve" process with Envoy-shaped checks over
// loopback for a bounded time and count, against a real Vault dev server, and reports
// throughput, latency, errors, and whether goroutines and heap stay flat.
//
//	go run ./scripts/soak -duration 3m -concurrency 32
//
// It exits non-zero on any gRPC error or wrong decision, or when goroutines or the live
// heap grow past the tolerances below.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/keygate/keygate/internal/loadtest"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

type sample struct {
	at         time.Duration
	goroutines int
	heapLive   uint64
}

func run() error {
	duration := flag.Duration("duration", 3*time.Minute, "how long to send checks")
	maxChecks := flag.Int64("max", 50_000_000, "stop after this many checks")
	concurrency := flag.Int("concurrency", 32, "concurrent gRPC callers")
	keys := flag.Int("keys", 200, "valid keys to spread the checks over")
	flag.Parse()

	v, err := vaulttest.Start()
	if err != nil {
		return err
	}
	defer v.Stop()
	bin, err := build()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(bin))

	valid, err := seed(v, *keys)
	if err != nil {
		return err
	}
	f, _ := authz.NewFormat("mgx-sk-")
	invalid := valid[0][:len(valid[0])-1] + "x"
	if invalid == valid[0] {
		invalid = valid[0][:len(valid[0])-1] + "y"
	}
	unknown, _ := f.Generate(nil)

	grpcAddr, httpAddr := loadtest.FreeAddr(), loadtest.FreeAddr()
	cmd := exec.Command(bin, "serve", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--admin-addr", "", "--vault-path", "soak", "--log-level", "error")
	cmd.Env = append(os.Environ(), v.Env()...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }()
	if err := waitReady(httpAddr); err != nil {
		return err
	}

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	fmt.Printf("soak: %d callers for %v (at most %d checks) against keygate %s\n", *concurrency, *duration, *maxChecks, grpcAddr)
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	lat := loadtest.NewHistogram()
	stop := time.Now().Add(*duration)
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && sent.Add(1) <= *maxChecks {
				key, want := valid[rand.IntN(len(valid))], 200
				switch n := rand.IntN(100); {
				case n < 10:
					key, want = invalid, 401 // bad checksum: no Vault read
				case n < 15:
					key, want = unknown, 401 // unknown: negative cache
				}
				start := time.Now()
				got, err := check(client, key)
				lat.Add(time.Since(start))
				if err == nil && got != want {
					err = fmt.Errorf("status %d, want %d", got, want)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		}()
	}

	var samples []sample
	begin := time.Now()
	tick := time.NewTicker(10 * time.Second)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		s, err := vars(httpAddr)
		if err != nil {
			return err
		}
		s.at = time.Since(begin)
		samples = append(samples, s)
		fmt.Printf("soak: %6.0fs  %9d checks  %6d goroutines  %7.1f MiB live heap\n", s.at.Seconds(), sent.Load(), s.goroutines, float64(s.heapLive)/(1<<20))
		select {
		case <-done:
			running = false
		case <-tick.C:
		}
	}
	elapsed := time.Since(begin)
	total := min(sent.Load(), *maxChecks)
	end, err := vars(httpAddr)
	if err != nil {
		return err
	}
	fmt.Printf("\nsoak: %d checks in %v: %.0f checks/s, %d failed\n", total, elapsed.Round(time.Second), float64(total)/elapsed.Seconds(), failed.Load())
	fmt.Printf("soak: latency p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n", lat.Quantile(.5), lat.Quantile(.9), lat.Quantile(.99), lat.Quantile(.999), lat.Max())
	// The first sample is taken while the callers start; compare from the second.
	base := samples[min(1, len(samples)-1)]
	fmt.Printf("soak: goroutines %d -> %d, live heap %.1f -> %.1f MiB (after the run)\n", base.goroutines, end.goroutines, float64(base.heapLive)/(1<<20), float64(end.heapLive)/(1<<20))

	var problems []error
	if failed.Load() > 0 {
		problems = append(problems, fmt.Errorf("%d checks failed; first: %v", failed.Load(), firstErr.Load()))
	}
	if end.goroutines > base.goroutines+20 {
		problems = append(problems, fmt.Errorf("goroutines grew from %d to %d", base.goroutines, end.goroutines))
	}
	if end.heapLive > 2*base.heapLive+8<<20 {
		problems = append(problems, fmt.Errorf("live heap grew from %d to %d bytes", base.heapLive, end.heapLive))
	}
	return errors.Join(problems...)
}

func check(c authv3.AuthorizationClient, key string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // Envoy's default
	defer cancel()
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "POST", Path: "/v1/chat/completions", Host: "api.example.com", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": "api.example.com", ":method": "POST", ":path": "/v1/chat/completions",
				"authorization": "Bearer " + key, "content-type": "application/json",
				"x-request-id": "soak", "user-agent": "soak/1",
			},
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

// seed stores n keys under secret/soak and returns them.
func seed(v *vaulttest.Server, n int) ([]string, error) {
	client, err := v.NewClient(nil)
	if err != nil {
		return nil, err
	}
	store, err := vaultstore.New(vaultstore.Config{Client: client, Path: "soak"})
	if err != nil {
		return nil, err
	}
	f, _ := authz.NewFormat("mgx-sk-")
	keys := make([]string, 0, n)
	for i := range n {
		key, rec, err := f.Issue(authz.KeySpec{Name: fmt.Sprintf("soak %d", i), Owner: "acct_soak", Scopes: []string{"chat:completions"}}, time.Now())
		if err != nil {
			return nil, err
		}
		if err := store.Create(context.Background(), rec); err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

func build() (string, error) {
	dir, err := os.MkdirTemp("", "keygate-soak-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "keygate")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/keygate").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build keygate (run from the repository root): %v\n%s", err, out)
	}
	return bin, nil
}

func waitReady(httpAddr string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("keygate did not become ready")
}

// vars reads the goroutine count and live heap from keygate's /debug/vars.
func vars(httpAddr string) (sample, error) {
	resp, err := http.Get("http://" + httpAddr + "/debug/vars")
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	var v struct {
		Memstats struct {
			HeapAlloc uint64
		} `json:"memstats"`
		Keygate struct {
			Goroutines int `json:"goroutines"`
		} `json:"keygate"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return sample{}, err
	}
	return sample{goroutines: v.Keygate.Goroutines, heapLive: v.Memstats.HeapAlloc}, nil
}

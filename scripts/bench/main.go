// Command bench measures keygate's gRPC check path side by side with a no-op ext_authz
// server (scripts/bench/noop), with the same load generator, request and concurrency.
//
//	go run ./scripts/bench -rounds 3 -n 40000
//
// It builds both servers, starts a Vault dev server (internal/vaulttest) and stores keys,
// starts the no-op server and two "keygate serve" processes (the default configuration,
// and one with a 5-route policy and a local rate-limit plan), warms keygate's cache, and
// then runs alternated rounds: each round sends n Envoy-shaped CheckRequests with a
// valid Bearer key from c callers over conns connections to each server in turn. For
// each round it prints req/s, p50/p90/p99 and the server's CPU per check (utime+stime
// from /proc/PID/stat), then the medians and their ratios to the no-op's. It then runs
// both servers at half of keygate's saturation rate (paced, latency from each call's
// scheduled start), measures the cold path (a key's first check, and the Vault reads
// for 100 concurrent first checks of one key), and, with -cpuprofile, writes a CPU
// profile of each keygate serve under the same load.
//
// The generator and the servers share the machine: figures are for comparison within
// one run, not absolute. With -pin, the servers run on the upper half of the CPUs and
// the generator on the lower half, each with GOMAXPROCS set to its share, so that
// neither takes the other's CPU; -rate fixes the paced run's rate, -paced-rounds
// alternates it, -skim has the generator read of an allowed answer only that it
// allows, -keygate-gogc sets keygate's GOGC, and -trace writes an execution trace of
// keygate's first paced round.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/keygate/keygate/internal/loadtest"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	rounds      = flag.Int("rounds", 3, "alternated rounds per server")
	perRound    = flag.Int("n", 40000, "checks per round")
	concurrency = flag.Int("c", 32, "concurrent callers")
	conns       = flag.Int("conns", 4, "gRPC connections the callers share")
	nkeys       = flag.Int("keys", 50, "valid keys the checks are spread over")
	halfFor     = flag.Duration("half", 5*time.Second, "length of the half-saturation run")
	cpuprofile  = flag.String("cpuprofile", "", "write a CPU profile of keygate serve under load to this file (x.pprof), and one of keygate+policy+ratelimit to x-policy.pprof")
	pin         = flag.Bool("pin", false, "run the servers on the upper half of the CPUs and the load generator on the lower half (sched_setaffinity, as taskset does), each with GOMAXPROCS set to its share")
	pacedRate   = flag.Float64("rate", 0, "rate of the paced run in checks a second; 0: half of keygate's median saturation rate")
	pacedRounds = flag.Int("paced-rounds", 1, "alternated rounds of the paced run")
	skim        = flag.Bool("skim", false, "the load generator reads of an allowed answer only that it allows (its ok_response field), not the whole message; denials are decoded whole")
	keygateGOGC = flag.Int("keygate-gogc", 0, "run the keygate processes with GOGC set to this (0: Go's default, 100)")
	traceFile   = flag.String("trace", "", "write a runtime execution trace of keygate serve during its first paced round to this file (go tool trace)")
)

const (
	prefix  = "mgx-sk-"
	ticksHz = 100 // USER_HZ, the unit of utime and stime in /proc/PID/stat
)

// policyConfig is the realistic configuration: 5 routes (the checked request matches
// the third, which needs a scope) and a local rate-limit plan every key falls under,
// with limits the run never reaches.
const policyConfig = `log_level: error
policy:
  deny_unmatched: true
  routes:
    - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
    - {name: embeddings, methods: [POST], path: /v1/embeddings, scope: embeddings}
    - {name: chat, methods: [POST], path: /v1/chat/completions, scope: chat:completions}
    - {name: files, prefix: /v1/files/, scope: files}
    - {name: audio, methods: [POST], pattern: /v1/audio/*, scope: audio}
rate_limits:
  backend: local
  default_plan: standard
  plans:
    standard: {per_minute: 100000000, burst: 10000000, owner_per_minute: 1000000000, owner_burst: 100000000}
`

type server struct {
	name   string
	addr   string
	http   string // keygate's health and metrics address
	pprof  string
	cmd    *exec.Cmd
	client []authv3.AuthorizationClient
}

type result struct {
	rps           float64
	p50, p90, p99 time.Duration
	cpuPerCheck   time.Duration
	failed        int64 // gRPC errors (deadline exceeded on a starved machine)
	denied        int64 // wrong decisions: the run is void
}

func run() error {
	flag.Parse()
	printMachine()
	dir, err := os.MkdirTemp("", "keygate-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	for _, b := range [][]string{{"keygate", "-tags", "benchprofile", "./cmd/keygate"}, {"noop", "./scripts/bench/noop"}} {
		args := append([]string{"build", "-o", filepath.Join(dir, b[0])}, b[1:]...)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("build %s (run from the repository root): %v\n%s", b[0], err, out)
		}
	}
	v, err := vaulttest.Start()
	if err != nil {
		return err
	}
	defer v.Stop()
	store, keys, err := seed(v, *nkeys)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policyConfig), 0o600); err != nil {
		return err
	}

	var serverCPUs []int
	if *pin {
		if serverCPUs, err = pinSelf(); err != nil {
			return err
		}
	}

	noop := &server{name: "no-op", addr: loadtest.FreeAddr()}
	noop.cmd = exec.Command(filepath.Join(dir, "noop"), "-addr", noop.addr)
	kg := keygate(dir, v, "keygate", "")
	kgPolicy := keygate(dir, v, "keygate+policy+ratelimit", filepath.Join(dir, "policy.yaml"))
	all := []*server{noop, kg, kgPolicy}
	for _, s := range all {
		if serverCPUs != nil {
			if err := s.pinTo(serverCPUs); err != nil {
				return err
			}
		}
		s.cmd.Stderr = os.Stderr
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			return err
		}
		defer func() { _ = s.cmd.Process.Signal(syscall.SIGTERM); _ = s.cmd.Wait() }()
	}
	for _, s := range all {
		if err := s.connect(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	reqs, err := requests(keys)
	if err != nil {
		return err
	}
	// Warm: every key once (keygate's cache), then a short run (both processes' pools).
	for _, s := range all {
		for _, r := range reqs {
			if err := s.warm(r); err != nil {
				return fmt.Errorf("%s warm-up: %w", s.name, err)
			}
		}
		if res := s.load(reqs, 5000); res.denied > 0 {
			return fmt.Errorf("%s warm-up: %d valid keys denied", s.name, res.denied)
		}
	}

	fmt.Printf("\n%d alternated rounds, %d checks each, %d callers over %d connections, %d keys\n",
		*rounds, *perRound, *concurrency, *conns, len(keys))
	fmt.Printf("%-26s %5s %9s %9s %9s %9s %11s %7s\n", "server", "round", "req/s", "p50", "p90", "p99", "CPU/check", "errors")
	results := map[*server][]result{}
	for round := 1; round <= *rounds; round++ {
		for _, s := range all {
			res := s.load(reqs, *perRound)
			if res.denied > 0 {
				return fmt.Errorf("%s: %d valid keys denied", s.name, res.denied)
			}
			results[s] = append(results[s], res)
			fmt.Printf("%-26s %5d %9.0f %9v %9v %9v %11v %7d\n", s.name, round, res.rps, res.p50, res.p90, res.p99, res.cpuPerCheck, res.failed)
		}
	}
	fmt.Printf("\nmedians and ratios to the no-op (CPU/check: lower is better; req/s: higher)\n")
	base := median(results[noop])
	for _, s := range all {
		m := median(results[s])
		fmt.Printf("%-26s req/s %7.0f (%.2fx)  p50 %v  p90 %v  p99 %v  CPU/check %v (%.2fx)\n", s.name, m.rps, m.rps/base.rps,
			m.p50, m.p90, m.p99, m.cpuPerCheck, float64(m.cpuPerCheck)/float64(base.cpuPerCheck))
	}

	half := median(results[kg]).rps / 2
	if *pacedRate > 0 {
		half = *pacedRate
		fmt.Printf("\npaced at %.0f req/s (-rate) for %v (latency from each call's scheduled start)\n", half, *halfFor)
	} else {
		fmt.Printf("\npaced at half of keygate's saturation rate: %.0f req/s for %v (latency from each call's scheduled start)\n", half, *halfFor)
	}
	pacedResults := map[*server][]result{}
	for round := 1; round <= *pacedRounds; round++ {
		for _, s := range []*server{noop, kg} {
			var tr chan error
			if s == kg && round == 1 && *traceFile != "" {
				tr = make(chan error, 1)
				go func() { tr <- s.trace(*traceFile, *halfFor) }()
			}
			var vault0 int64
			if *pacedRounds > 1 {
				vault0 = vaultRequests(kg, kgPolicy)
			}
			res := s.paced(reqs, half, *halfFor)
			vault := int64(-1) // unknown
			if *pacedRounds > 1 {
				if v := vaultRequests(kg, kgPolicy); v >= 0 && vault0 >= 0 {
					vault = v - vault0
				}
			}
			if tr != nil {
				if err := <-tr; err != nil {
					return err
				}
			}
			pacedResults[s] = append(pacedResults[s], res)
			name, extra := s.name, ""
			if *pacedRounds > 1 {
				// keygate's background Vault requests (the change feed, the usage flush
				// once a minute) load the machine during whichever round they fall in.
				name, extra = fmt.Sprintf("%s #%d", s.name, round), fmt.Sprintf("  vault requests %d", vault)
			}
			fmt.Printf("%-26s achieved %7.0f req/s  p50 %v  p90 %v  p99 %v  CPU/check %v  errors %d  denied %d%s\n", name, res.rps, res.p50, res.p90, res.p99, res.cpuPerCheck, res.failed, res.denied, extra)
		}
	}
	if *pacedRounds > 1 {
		fmt.Printf("medians of the paced rounds\n")
		for _, s := range []*server{noop, kg} {
			m := median(pacedResults[s])
			fmt.Printf("%-26s p50 %v  p90 %v  p99 %v  CPU/check %v\n", s.name, m.p50, m.p90, m.p99, m.cpuPerCheck)
		}
	}
	if *traceFile != "" {
		fmt.Printf("execution trace of keygate's first paced round: %s (go tool trace %s)\n", *traceFile, *traceFile)
	}

	if err := coldPath(kg, store); err != nil {
		return err
	}
	if *cpuprofile != "" {
		if err := profile(kg, reqs, *cpuprofile); err != nil {
			return err
		}
		if err := profile(kgPolicy, reqs, strings.TrimSuffix(*cpuprofile, ".pprof")+"-policy.pprof"); err != nil {
			return err
		}
	}
	return nil
}

func keygate(dir string, v *vaulttest.Server, name, config string) *server {
	s := &server{name: name, addr: loadtest.FreeAddr(), http: loadtest.FreeAddr(), pprof: loadtest.FreeAddr()}
	args := []string{"serve", "--grpc-addr", s.addr, "--http-addr", s.http, "--admin-addr", "", "--vault-path", "bench", "--log-level", "error"}
	if config != "" {
		args = append(args, "--config", config)
	}
	s.cmd = exec.Command(filepath.Join(dir, "keygate"), args...)
	s.cmd.Env = append(append(os.Environ(), v.Env()...), "KEYGATE_BENCH_PPROF="+s.pprof)
	if *keygateGOGC != 0 {
		s.cmd.Env = append(s.cmd.Env, "GOGC="+strconv.Itoa(*keygateGOGC))
	}
	return s
}

func (s *server) connect() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", s.addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return errors.New("did not start listening")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range *conns {
		// Each ClientConn is its own HTTP/2 connection.
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if *skim {
			opts = append(opts, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(skimCodec{encoding.GetCodecV2(grpcproto.Name)})))
		}
		conn, err := grpc.NewClient(s.addr, opts...)
		if err != nil {
			return err
		}
		conn.Connect()
		s.client = append(s.client, authv3.NewAuthorizationClient(conn))
	}
	if s.http == "" {
		return nil
	}
	for time.Now().Before(deadline) {
		if resp, err := http.Get("http://" + s.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("did not become ready")
}

// errDenied is a wrong decision: every check sent is for a valid key.
var errDenied = errors.New("denied")

func (s *server) check(c authv3.AuthorizationClient, r *authv3.CheckRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // Envoy's default
	defer cancel()
	resp, err := c.Check(ctx, r)
	if err != nil {
		return err
	}
	if resp.GetOkResponse() == nil {
		return fmt.Errorf("%w: %d %s", errDenied, resp.GetDeniedResponse().GetStatus().GetCode(), resp.GetDeniedResponse().GetBody())
	}
	return nil
}

// tally counts err as a wrong decision or a failed call.
func tally(err error, failed, denied *atomic.Int64) {
	switch {
	case errors.Is(err, errDenied):
		denied.Add(1)
	case err != nil:
		failed.Add(1)
	}
}

func (s *server) checkOK(r *authv3.CheckRequest) error { return s.check(s.client[0], r) }

// warm checks r until it is allowed. A 503 is retried for up to 30 s: every key is new
// to keygate, and one client's share of the miss budget (cache.source_miss_rate, 10
// reads a second by default) paces the first reads of 50 keys.
func (s *server) warm(r *authv3.CheckRequest) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := s.checkOK(r)
		if err == nil || !strings.Contains(err.Error(), "denied: 503 ") || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load sends n checks from the callers as fast as the server answers.
func (s *server) load(reqs []*authv3.CheckRequest, n int) result {
	var next, failed, denied atomic.Int64
	lat := loadtest.NewHistogram()
	cpu0 := cpuTicks(s.cmd.Process.Pid)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *concurrency {
		wg.Go(func() {
			c := s.client[w%len(s.client)]
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				t := time.Now()
				err := s.check(c, reqs[int(i)%len(reqs)])
				lat.Add(time.Since(t))
				tally(err, &failed, &denied)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTicks(s.cmd.Process.Pid) - cpu0
	return result{rps: float64(n) / elapsed.Seconds(), p50: lat.Quantile(.5), p90: lat.Quantile(.9), p99: lat.Quantile(.99),
		cpuPerCheck: time.Duration(float64(cpu) * float64(time.Second) / ticksHz / float64(n)), failed: failed.Load(), denied: denied.Load()}
}

// paced sends checks at rate per second for d, each caller on its own schedule; a
// call's latency counts from when it was due, so a stalled server is not hidden.
func (s *server) paced(reqs []*authv3.CheckRequest, rate float64, d time.Duration) result {
	var sent, failed, denied atomic.Int64
	lat := loadtest.NewHistogram()
	interval := time.Duration(float64(*concurrency) * float64(time.Second) / rate)
	cpu0 := cpuTicks(s.cmd.Process.Pid)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range *concurrency {
		wg.Go(func() {
			c := s.client[w%len(s.client)]
			due := start.Add(interval * time.Duration(w) / time.Duration(*concurrency))
			for i := w; due.Before(start.Add(d)); i++ {
				time.Sleep(time.Until(due))
				err := s.check(c, reqs[i%len(reqs)])
				lat.Add(time.Since(due))
				sent.Add(1)
				tally(err, &failed, &denied)
				due = due.Add(interval)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTicks(s.cmd.Process.Pid) - cpu0
	n := sent.Load()
	return result{rps: float64(n) / elapsed.Seconds(), p50: lat.Quantile(.5), p90: lat.Quantile(.9), p99: lat.Quantile(.99),
		cpuPerCheck: time.Duration(float64(cpu) * float64(time.Second) / ticksHz / float64(n)), failed: failed.Load(), denied: denied.Load()}
}

// coldPath measures a key's first check (a Vault read), and how many Vault reads 100
// concurrent first checks of one key make.
func coldPath(s *server, store *vaultstore.Store) error {
	f, _ := authz.NewFormat(prefix)
	var firsts []time.Duration
	for i := range 20 {
		key, err := create(store, f, fmt.Sprintf("cold %d", i))
		if err != nil {
			return err
		}
		r, _ := requests([]string{key})
		t := time.Now()
		if err := s.checkOK(r[0]); err != nil {
			return fmt.Errorf("cold check: %w", err)
		}
		firsts = append(firsts, time.Since(t))
	}
	slices.Sort(firsts)
	fmt.Printf("\ncold path (keygate, real Vault dev server): first check of a key, 20 keys: min %v  median %v  max %v\n",
		firsts[0], firsts[len(firsts)/2], firsts[len(firsts)-1])
	key, err := create(store, f, "cold shared")
	if err != nil {
		return err
	}
	r, _ := requests([]string{key})
	before, err := vaultRecordReads(s)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			if s.check(s.client[i%len(s.client)], r[0]) != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	after, err := vaultRecordReads(s)
	if err != nil {
		return err
	}
	fmt.Printf("100 concurrent first checks of one key: %d Vault record reads, %d failed\n", after-before, failed.Load())
	return nil
}

// vaultRequests is the keygate processes' count of Vault requests, from their
// /metrics; -1 when one cannot be read.
func vaultRequests(servers ...*server) int64 {
	var n int64
	for _, s := range servers {
		c, err := vaultCount(s, func(string) bool { return true })
		if err != nil {
			return -1
		}
		n += c
	}
	return n
}

// vaultRecordReads is keygate's count of Vault record reads, from its /metrics.
func vaultRecordReads(s *server) (int64, error) {
	return vaultCount(s, func(l string) bool {
		return strings.Contains(l, `kind="records"`) && strings.Contains(l, `operation="read"`)
	})
}

// vaultCount sums keygate's Vault request counts whose series match.
func vaultCount(s *server, match func(series string) bool) (int64, error) {
	resp, err := http.Get("http://" + s.http + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var n int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "keygate_vault_request_duration_seconds_count{") && match(l) {
			v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			if err != nil {
				return 0, err
			}
			n += int64(v)
		}
	}
	return n, sc.Err()
}

// trace writes a runtime execution trace of a keygate serve, d long, to file.
func (s *server) trace(file string, d time.Duration) error {
	return loadtest.Download(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", s.pprof, max(1, int(d/time.Second))), file)
}

// profile takes a 10 s CPU profile of a keygate serve while the callers load it.
func profile(s *server, reqs []*authv3.CheckRequest, file string) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-done:
				return
			default:
			}
			s.load(reqs, 20000)
		}
	}()
	err := loadtest.Download("http://"+s.pprof+"/debug/pprof/profile?seconds=10", file)
	done <- struct{}{}
	<-done
	if err != nil {
		return err
	}
	fmt.Printf("\nCPU profile of %s under load: %s (go tool pprof -top %s)\n", s.name, file, file)
	return nil
}

// requests are Envoy-shaped CheckRequests (testdata/envoy/check_request.json), one
// per key, with the key as a Bearer token.
func requests(keys []string) ([]*authv3.CheckRequest, error) {
	raw, err := os.ReadFile(filepath.Join("testdata", "envoy", "check_request.json"))
	if err != nil {
		return nil, err
	}
	var tmpl authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &tmpl); err != nil {
		return nil, err
	}
	var out []*authv3.CheckRequest
	for _, k := range keys {
		r := proto.Clone(&tmpl).(*authv3.CheckRequest)
		r.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"] = "Bearer " + k
		out = append(out, r)
	}
	return out, nil
}

func seed(v *vaulttest.Server, n int) (*vaultstore.Store, []string, error) {
	client, err := v.NewClient(nil)
	if err != nil {
		return nil, nil, err
	}
	store, err := vaultstore.New(vaultstore.Config{Client: client, Path: "bench"})
	if err != nil {
		return nil, nil, err
	}
	f, _ := authz.NewFormat(prefix)
	var keys []string
	for i := range n {
		key, err := create(store, f, fmt.Sprintf("bench %d", i))
		if err != nil {
			return nil, nil, err
		}
		keys = append(keys, key)
	}
	return store, keys, nil
}

func create(store *vaultstore.Store, f authz.Format, name string) (string, error) {
	key, rec, err := f.Issue(authz.KeySpec{Name: name, Owner: "acct_bench", Scopes: []string{"chat:completions", "models:read"}}, time.Now())
	if err != nil {
		return "", err
	}
	return key, store.Create(context.Background(), rec)
}

func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return result{rps: pick(func(r result) float64 { return r.rps }),
		p50:         time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p90:         time.Duration(pick(func(r result) float64 { return float64(r.p90) })),
		p99:         time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		cpuPerCheck: time.Duration(pick(func(r result) float64 { return float64(r.cpuPerCheck) }))}
}

// cpuTicks is a process's user plus system CPU time, in ticks.
func cpuTicks(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: count fields after it.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64) // field 14, utime
	s, _ := strconv.ParseInt(f[12], 10, 64) // field 15, stime
	return u + s
}

func printMachine() {
	model := "unknown"
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.Lines(string(raw)) {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("machine: %s, %d CPUs, %s %s/%s; load average before the run: %s", model, runtime.NumCPU(),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}

// Command benchtls measures keygate's mTLS terminator against nginx side by side on
// loopback: both require a client certificate (TLS 1.3, ECDSA P-256) and proxy to the
// same small upstream over keep-alive connections; keygate also checks an API key
// (real Vault, warm cache). Rounds alternate between the two, in two modes: keep-alive
// (one connection per worker) and a new TLS connection per request. It prints req/s,
// p50/p99 and server CPU per request (from /proc/PID/stat) for each, their ratios
// (medians over rounds), and the machine's CPU.
//
//	go run ./scripts/benchtls -rounds 2 -duration 3s
//
// With -profile PREFIX it also writes PREFIX.cpu and PREFIX.allocs: a CPU profile and
// the allocations of keygate serve during one more keep-alive run, and PREFIX.trace, a
// one-second execution trace under the same load (the binary is then built with -tags
// benchprofile, whose profiler listens on loopback only).
//
// Two more servers give the floor for a Go terminator, each this program in another
// process: go-proxy is Go's crypto/tls and net/http with httputil.ReverseProxy and the
// same upstream pool as keygate, and nothing else (no check, no header rules);
// go-direct is the same TLS server answering the upstream's body itself, with no
// upstream at all.
//
// It needs Debian's nginx-light (apt-get install nginx-light) and Vault (scripts/vault-build.sh).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"github.com/keygate/keygate/internal/loadtest"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
	"github.com/keygate/keygate/vaultstore"
)

func main() {
	if len(os.Args) == 6 && os.Args[1] == "-go-proxy" {
		goProxy(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchtls:", err)
		os.Exit(1)
	}
}

type result struct {
	rps, p50, p99, cpuPerReq float64 // req/s, ms, ms, µs
	errors                   int64
}

func run() error {
	rounds := flag.Int("rounds", 2, "alternated rounds per mode")
	duration := flag.Duration("duration", 3*time.Second, "length of one measurement")
	workers := flag.Int("workers", 16, "concurrent clients")
	serverEnv := flag.String("server-env", "", "NAME=VALUE[,NAME=VALUE] added to the environment of keygate, go-proxy and go-direct (GOMAXPROCS=1, GOGC=200)")
	baseline := flag.String("baseline", "", "a keygate binary (another build) to measure beside this one, as keygate-base")
	profile := flag.String("profile", "", "write PREFIX.cpu and PREFIX.allocs: keygate's CPU and allocation profiles under keep-alive load")
	flag.Parse()
	if *duration > 10*time.Second || *rounds > 5 {
		return errors.New("keep it short: -duration at most 10s, -rounds at most 5")
	}
	nginxBin, err := exec.LookPath("nginx")
	if err != nil {
		if nginxBin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			return errors.New("nginx not found: apt-get install nginx-light")
		}
	}
	dir, err := os.MkdirTemp("", "keygate-benchtls-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	pki, err := newPKI(dir)
	if err != nil {
		return err
	}
	upstream := &http.Server{Handler: http.HandlerFunc(answerModels)}
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = upstream.Serve(ul) }()
	defer upstream.Close()
	upAddr := ul.Addr().String()

	v, err := vaulttest.Start()
	if err != nil {
		return err
	}
	defer v.Stop()
	key, err := seed(v)
	if err != nil {
		return err
	}
	bin := filepath.Join(dir, "keygate")
	build := []string{"build", "-o", bin}
	pprofAddr := ""
	if *profile != "" {
		build = append(build, "-tags", "benchprofile")
		pprofAddr = loadtest.FreeAddr()
	}
	if out, err := exec.Command("go", append(build, "./cmd/keygate")...).CombinedOutput(); err != nil {
		return fmt.Errorf("build keygate (run from the repository root): %v\n%s", err, out)
	}

	kgAddr, ngAddr := loadtest.FreeAddr(), loadtest.FreeAddr()
	cfg := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "vault: {path: bench}\nlog_level: error\nterminate:\n  tls: {cert_file: %s, key_file: %s, client_ca_file: %s}\n",
		pki.serverCert, pki.serverKey, pki.caFile), 0o600); err != nil {
		return err
	}
	kg := exec.Command(bin, "serve", "--config", cfg, "--grpc-addr", loadtest.FreeAddr(), "--http-addr", "", "--admin-addr", "",
		"--terminate", kgAddr, "--upstream", "http://"+upAddr)
	var extraEnv []string
	if *serverEnv != "" {
		extraEnv = strings.Split(*serverEnv, ",")
	}
	kg.Env = append(append(os.Environ(), v.Env()...), extraEnv...)
	if pprofAddr != "" {
		kg.Env = append(kg.Env, "KEYGATE_BENCH_PPROF="+pprofAddr)
	}
	kg.Stderr = os.Stderr
	kg.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := kg.Start(); err != nil {
		return err
	}
	defer func() { _ = kg.Process.Signal(syscall.SIGTERM); _ = kg.Wait() }()
	var base *exec.Cmd
	baseAddr := loadtest.FreeAddr()
	if *baseline != "" {
		base = exec.Command(*baseline, "serve", "--config", cfg, "--grpc-addr", loadtest.FreeAddr(), "--http-addr", "", "--admin-addr", "",
			"--terminate", baseAddr, "--upstream", "http://"+upAddr)
		base.Env = append(append(os.Environ(), v.Env()...), extraEnv...)
		base.Stderr = os.Stderr
		base.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := base.Start(); err != nil {
			return err
		}
		defer func() { _ = base.Process.Signal(syscall.SIGTERM); _ = base.Wait() }()
	}

	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(dir, ngAddr, upAddr, pki)), 0o600); err != nil {
		return err
	}
	ng := exec.Command(nginxBin, "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
	ng.Stderr = os.Stderr
	ng.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ng.Start(); err != nil {
		return err
	}
	defer func() { _ = ng.Process.Signal(syscall.SIGQUIT); _ = ng.Wait() }()

	gpAddr := loadtest.FreeAddr()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	gdAddr := loadtest.FreeAddr()
	var gp, gd *exec.Cmd
	for _, c := range []struct {
		cmd            **exec.Cmd
		addr, upstream string
	}{{&gp, gpAddr, "http://" + upAddr}, {&gd, gdAddr, "direct"}} {
		cmd := exec.Command(self, "-go-proxy", c.addr, c.upstream, pki.serverCert+","+pki.serverKey, pki.caFile)
		cmd.Env = append(os.Environ(), extraEnv...)
		cmd.Stderr = os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		*c.cmd = cmd
	}

	ready := map[string]string{"keygate": kgAddr, "nginx": ngAddr, "go-proxy": gpAddr, "go-direct": gdAddr}
	if base != nil {
		ready["keygate-base"] = baseAddr
	}
	for name, addr := range ready {
		if err := waitOK(pki, addr, key); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}

	fmt.Printf("benchtls: %s, %d CPUs, %s; %d workers, %d rounds of %v per server and mode, HTTP/1.1 over TLS 1.3 (ECDSA P-256)\n",
		cpuModel(), numCPU(), goVersion(), *workers, *rounds, *duration)
	if len(extraEnv) > 0 {
		fmt.Printf("keygate, go-proxy and go-direct run with %s\n", strings.Join(extraEnv, " "))
	}
	servers := []struct {
		name, addr string
		pid        int
	}{{"keygate", kgAddr, kg.Process.Pid}, {"nginx", ngAddr, ng.Process.Pid}, {"go-proxy", gpAddr, gp.Process.Pid},
		{"go-direct", gdAddr, gd.Process.Pid}}
	if base != nil {
		servers = append(servers, struct {
			name, addr string
			pid        int
		}{"keygate-base", baseAddr, base.Process.Pid})
	}
	for _, fresh := range []bool{false, true} {
		mode := "keep-alive"
		if fresh {
			mode = "new connection per request"
		}
		res := map[string][]result{}
		for r := range *rounds {
			for i := range servers {
				s := servers[(i+r)%len(servers)] // alternate which goes first
				out, err := load(pki, s.addr, key, s.pid, *workers, *duration, fresh)
				if err != nil {
					return err
				}
				res[s.name] = append(res[s.name], out)
				fmt.Printf("  %-26s round %d %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.1f µs/req  errors %d\n",
					mode, r+1, s.name, out.rps, out.p50, out.p99, out.cpuPerReq, out.errors)
			}
		}
		k, n, g, gd := medians(res["keygate"]), medians(res["nginx"]), medians(res["go-proxy"]), medians(res["go-direct"])
		for _, m := range []struct {
			name string
			r    result
		}{{"keygate", k}, {"nginx", n}, {"go-proxy", g}, {"go-direct", gd}, {"keygate-base", medians(res["keygate-base"])}} {
			if m.r.rps == 0 {
				continue
			}
			fmt.Printf("%s median %-12s %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  CPU %6.1f µs/req\n", mode, m.name, m.r.rps, m.r.p50, m.r.p99, m.r.cpuPerReq)
		}
		fmt.Printf("%s ratios keygate/nginx: req/s %.2f, CPU/req %.2f, p99 %.2f\n", mode, k.rps/n.rps, k.cpuPerReq/n.cpuPerReq, k.p99/n.p99)
		fmt.Printf("%s ratios go-proxy/nginx: req/s %.2f, CPU/req %.2f; keygate/go-proxy: req/s %.2f, CPU/req %.2f; go-direct/nginx: CPU/req %.2f\n\n",
			mode, g.rps/n.rps, g.cpuPerReq/n.cpuPerReq, k.rps/g.rps, k.cpuPerReq/g.cpuPerReq, gd.cpuPerReq/n.cpuPerReq)
	}
	if *profile != "" {
		return profileRun(pki, kgAddr, key, kg.Process.Pid, pprofAddr, *profile, *workers, *duration)
	}
	return nil
}

// profileRun takes keygate's CPU profile during one keep-alive load run, and its
// allocations over the same run (the allocs profile before and after, as a base and a
// profile for go tool pprof -base).
func profileRun(pki *pki, addr, key string, pid int, pprofAddr, prefix string, workers int, d time.Duration) error {
	get := func(path, file string) error { return loadtest.Download("http://"+pprofAddr+path, file) }
	if err := get("/debug/pprof/allocs", prefix+".allocs-base"); err != nil {
		return err
	}
	cpu := make(chan error, 1)
	go func() {
		cpu <- get(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds())-1)), prefix+".cpu")
	}()
	res, err := load(pki, addr, key, pid, workers, d, false)
	if err != nil {
		return err
	}
	if err := <-cpu; err != nil {
		return err
	}
	if err := get("/debug/pprof/allocs", prefix+".allocs"); err != nil {
		return err
	}
	// An execution trace of one second more under load: where requests wait
	// (go tool trace -pprof=sync|net|sched PREFIX.trace).
	tr := make(chan error, 1)
	go func() { tr <- get("/debug/pprof/trace?seconds=1", prefix+".trace") }()
	if _, err := load(pki, addr, key, pid, workers, 2*time.Second, false); err != nil {
		return err
	}
	if err := <-tr; err != nil {
		return err
	}
	fmt.Printf("profiled keep-alive run: %.0f req/s, %.1f µs CPU/req, %d requests\n", res.rps, res.cpuPerReq, int64(res.rps*d.Seconds()))
	fmt.Printf("  go tool pprof -top %[1]s.cpu\n  go tool pprof -sample_index=alloc_space -base %[1]s.allocs-base -top %[1]s.allocs\n  go tool trace -pprof=sync %[1]s.trace\n", prefix)
	return nil
}

// load runs workers against addr for d and measures the server process tree's CPU.
func load(pki *pki, addr, key string, pid, workers int, d time.Duration, fresh bool) (result, error) {
	var total, failed atomic.Int64
	lats := make([][]time.Duration, workers)
	cpu0 := treeCPU(pid)
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{TLSClientConfig: pki.clientTLS(), DisableKeepAlives: fresh, MaxIdleConnsPerHost: 1,
				TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}} // HTTP/1.1
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for n := 0; n < 1_000_000 && time.Now().Before(stop); n++ {
				req, _ := http.NewRequest("GET", "https://"+addr+"/v1/models", nil)
				req.Header.Set("Authorization", "Bearer "+key)
				t0 := time.Now()
				resp, err := c.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				lats[w] = append(lats[w], time.Since(t0))
				total.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := treeCPU(pid) - cpu0
	all := slices.Concat(lats...)
	slices.Sort(all)
	if len(all) == 0 {
		return result{}, errors.New("no requests completed")
	}
	q := func(f float64) float64 { return float64(all[int(f*float64(len(all)-1))]) / float64(time.Millisecond) }
	n := float64(total.Load())
	return result{rps: n / elapsed.Seconds(), p50: q(.5), p99: q(.99), cpuPerReq: cpu.Seconds() * 1e6 / n, errors: failed.Load()}, nil
}

func medians(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	m := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v)%2 == 0 {
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		return v[len(v)/2]
	}
	return result{rps: m(func(r result) float64 { return r.rps }), p50: m(func(r result) float64 { return r.p50 }),
		p99: m(func(r result) float64 { return r.p99 }), cpuPerReq: m(func(r result) float64 { return r.cpuPerReq })}
}

// treeCPU is the user+system CPU time of pid and its children (nginx's workers).
func treeCPU(pid int) time.Duration {
	var ticks int64
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		// Fields after the command's closing parenthesis: state ppid ... utime(14) stime(15).
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if p != pid && ppid != pid {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func nginxConf(dir, addr, upstream string, p *pki) string {
	return fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
daemon off;
error_log %[1]s/error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream app { server %[3]s; keepalive 64; }
    server {
        listen %[2]s ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate %[4]s;
        ssl_certificate_key %[5]s;
        ssl_client_certificate %[6]s;
        ssl_verify_client on;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, dir, addr, upstream, p.serverCert, p.serverKey, p.caFile)
}

func waitOK(p *pki, addr, key string) error {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS()}, Timeout: time.Second}
	var last error
	for range 200 {
		req, _ := http.NewRequest("GET", "https://"+addr+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("not serving: %v", last)
}

// seed stores one valid key under secret/bench and returns it.
func seed(v *vaulttest.Server) (string, error) {
	client, err := v.NewClient(nil)
	if err != nil {
		return "", err
	}
	store, err := vaultstore.New(vaultstore.Config{Client: client, Path: "bench"})
	if err != nil {
		return "", err
	}
	f, _ := authz.NewFormat("mgx-sk-")
	key, rec, err := f.Issue(authz.KeySpec{Name: "bench", Owner: "acct_bench", Scopes: []string{"models:read"}}, time.Now())
	if err != nil {
		return "", err
	}
	return key, store.Create(context.Background(), rec)
}

// pki is a CA, a server certificate for 127.0.0.1 and a client certificate, ECDSA P-256.
type pki struct {
	caFile, serverCert, serverKey string
	roots                         *x509.CertPool
	client                        tls.Certificate
}

func newPKI(dir string) (*pki, error) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(n int64, server bool) ([]byte, []byte, error) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		t := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "bench"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			t.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			t.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, t, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), nil
	}
	p := &pki{caFile: filepath.Join(dir, "ca.pem"), serverCert: filepath.Join(dir, "server.pem"), serverKey: filepath.Join(dir, "server-key.pem"),
		roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	sc, sk, err := leaf(2, true)
	if err != nil {
		return nil, err
	}
	cc, ck, err := leaf(3, false)
	if err != nil {
		return nil, err
	}
	if p.client, err = tls.X509KeyPair(cc, ck); err != nil {
		return nil, err
	}
	for f, b := range map[string][]byte{p.caFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), p.serverCert: sc, p.serverKey: sk} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (p *pki) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.client}, MinVersion: tls.VersionTLS13}
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor") + 1
}

func goVersion() string {
	out, _ := exec.Command("go", "env", "GOVERSION").Output()
	return strings.TrimSpace(string(out))
}

// goProxy serves a floor for a Go terminator on addr: TLS requiring a client
// certificate from caFile, and httputil.ReverseProxy to upstream over a keep-alive pool
// like keygate's, or, when upstream is "direct", the upstream's answer written by the
// handler itself. certKey is "certfile,keyfile". It runs until killed.
func goProxy(addr, upstream, certKey, caFile string) {
	certFile, keyFile, _ := strings.Cut(certKey, ",")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		panic(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	up, err := url.Parse(upstream)
	if err != nil {
		panic(err)
	}
	var handler http.Handler = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(up); pr.Out.Host = pr.In.Host; pr.SetXForwarded() },
		Transport: &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	if upstream == "direct" {
		handler = http.HandlerFunc(answerModels)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{cert}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert,
		MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}}} // as keygate's listeners
	panic(srv.ServeTLS(ln, "", ""))
}

// answerModels is the upstream's answer.
func answerModels(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"object":"list","data":[{"id":"mx4-atlas-core","object":"model"}]}`)
}

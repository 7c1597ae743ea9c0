// Package vaulttest starts a real Vault dev server on a free loopback port for tests.
//
// The binary is the pinned Vault that scripts/vault-build.sh builds once per machine
// (or the one named by KEYGATE_VAULT). A test package shares one server: start it in
// TestMain with Main, and give each test its own KV path so tests do not see each other.
package vaulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Server is a running Vault dev server. KV v2 is mounted at "secret/".
type Server struct {
	Addr  string // e.g. http://127.0.0.1:41234
	Token string // root token
	Bin   string // path of the vault binary

	// CACert is the PEM file of the CA that signed the server's certificate; "" on HTTP.
	CACert string

	port   int
	tlsDir string
	cmd    *exec.Cmd
	log    *os.File
	done   chan struct{}
}

// Pause freezes the server (SIGSTOP): connections are accepted by the kernel but never
// answered, as with a hung Vault. It returns once every thread has stopped, so no
// request sent after it can be answered. Resume undoes it.
func (s *Server) Pause() error {
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for !Stopped(s.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			return errors.New("vault did not stop after SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Stopped reports whether every thread of process pid is in the stopped state (SIGSTOP
// has taken effect).
func Stopped(pid int) bool {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return true
}

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// Kill ends the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	<-s.done
}

// Restart starts a new dev server on the same address with the same root token, after
// Kill. A dev server keeps nothing: its KV store starts empty.
func (s *Server) Restart() error {
	s.log.Close()
	os.Remove(s.log.Name())
	if s.tlsDir != "" {
		os.RemoveAll(s.tlsDir)
	}
	n, err := start(s.Bin, s.port, s.Token, s.CACert != "")
	if err != nil {
		return err
	}
	*s = *n
	return nil
}

// Shared is one dev server for a whole test package, started by the first test that
// asks for it, so tests (and fuzz workers) that need no Vault start none. Use it as:
//
//	var shared vaulttest.Shared
//	func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }
//	... srv := shared.Get(t)
type Shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Get returns the package's server, starting it on first use.
func (s *Shared) Get(t testing.TB) *Server {
	t.Helper()
	s.once.Do(func() { s.srv, s.err = Start() })
	if s.err != nil {
		t.Fatalf("vaulttest: %v", s.err)
	}
	return s.srv
}

// Main runs the package's tests and stops the server if one was started.
func (s *Shared) Main(m *testing.M) int {
	code := m.Run()
	if s.srv != nil {
		s.srv.Stop()
	}
	return code
}

// Start builds (once per machine) and starts a Vault dev server on plain HTTP.
func Start() (*Server, error) { return startWith(false) }

// StartTLS starts a Vault dev server with TLS (-dev-tls): its listener asks clients for
// certificates, so TLS certificate auth works. CACert is the CA to trust.
func StartTLS() (*Server, error) { return startWith(true) }

func startWith(useTLS bool) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 3 { // the free port may be taken between probing and binding
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		var tok [16]byte
		if _, err := rand.Read(tok[:]); err != nil {
			return nil, err
		}
		s, err := start(bin, port, "root-"+hex.EncodeToString(tok[:]), useTLS)
		if err == nil {
			return s, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the path of the pinned Vault binary, building it on first use.
func Binary() (string, error) {
	binOnce.Do(func() {
		if p := os.Getenv("KEYGATE_VAULT"); p != "" {
			binPath = p
			return
		}
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "vault-build.sh"))
		cmd.Stderr = os.Stderr // progress of a first build
		out, err := cmd.Output()
		if err != nil {
			binErr = fmt.Errorf("build vault: %w", err)
			return
		}
		binPath = strings.TrimSpace(string(out))
	})
	return binPath, binErr
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "vault-build.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("vaulttest: scripts/vault-build.sh not found above the working directory")
		}
		dir = parent
	}
}

func start(bin string, port int, token string, useTLS bool) (*Server, error) {
	s := &Server{
		Addr:  fmt.Sprintf("http://127.0.0.1:%d", port),
		Token: token,
		Bin:   bin,
		port:  port,
		done:  make(chan struct{}),
	}
	var err error
	s.log, err = os.CreateTemp("", "vault-dev-*.log")
	if err != nil {
		return nil, err
	}
	args := []string{"server", "-dev",
		"-dev-listen-address", fmt.Sprintf("127.0.0.1:%d", port),
		"-dev-root-token-id", s.Token,
		"-dev-no-store-token",
		"-log-level", "warn"}
	if useTLS {
		if s.tlsDir, err = os.MkdirTemp("", "vault-dev-tls-"); err != nil {
			return nil, err
		}
		s.Addr = fmt.Sprintf("https://127.0.0.1:%d", port)
		s.CACert = filepath.Join(s.tlsDir, "vault-ca.pem")
		args = append(args, "-dev-tls", "-dev-tls-cert-dir", s.tlsDir)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = append(os.Environ(), "VAULT_ADDR=", "VAULT_TOKEN=", "HOME="+os.TempDir())
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	// The server dies with the test binary, even when the test is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.log.Close()
		return nil, fmt.Errorf("start vault: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	if err := s.waitReady(30 * time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("vault exited during start-up: %s", s.Logs())
		default:
		}
		resp, err := s.httpClient().Get(s.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("vault not ready after %s: %s", limit, s.Logs())
}

// httpClient trusts the server's CA once the server has written it.
func (s *Server) httpClient() *http.Client {
	if s.CACert == "" {
		return http.DefaultClient
	}
	pem, err := os.ReadFile(s.CACert)
	if err != nil {
		return http.DefaultClient // not written yet; the request fails and is retried
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// Logs returns what the server has written so far.
func (s *Server) Logs() string {
	b, _ := os.ReadFile(s.log.Name())
	return string(bytes.TrimSpace(b))
}

// Stop stops the server and removes its log.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	s.log.Close()
	os.Remove(s.log.Name())
	if s.tlsDir != "" {
		os.RemoveAll(s.tlsDir)
	}
}

// Client returns a root-token client for the server. transport, when non-nil, wraps
// the client's HTTP transport (to count or slow requests).
func (s *Server) Client(t testing.TB, transport func(http.RoundTripper) http.RoundTripper) *api.Client {
	t.Helper()
	c, err := s.NewClient(transport)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewClient is Client for callers outside a test.
func (s *Server) NewClient(transport func(http.RoundTripper) http.RoundTripper) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	if s.CACert != "" {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: s.CACert}); err != nil {
			return nil, err
		}
	}
	if transport != nil {
		cfg.HttpClient.Transport = transport(cfg.HttpClient.Transport)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(s.Token)
	return c, nil
}

// Env returns VAULT_ADDR and VAULT_TOKEN settings for a child process or run().
func (s *Server) Env() []string {
	return []string{"VAULT_ADDR=" + s.Addr, "VAULT_TOKEN=" + s.Token}
}

// UniquePath returns a fresh KV base path for one test, so tests sharing the server do
// not see each other's keys.
func UniquePath(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	if len(name) > 40 {
		name = name[:40]
	}
	return "keygate-test/" + strings.ToLower(name) + "-" + hex.EncodeToString(b[:])
}

// Counter is an http.RoundTripper that counts the requests whose path contains a
// substring (and, when Method is set, that use it), passing every request on.
type Counter struct {
	Next     http.RoundTripper
	Contains string
	Method   string
	mu       sync.Mutex
	n        int
}

// RoundTrip implements http.RoundTripper.
func (c *Counter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, c.Contains) && (c.Method == "" || r.Method == c.Method) {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return c.Next.RoundTrip(r)
}

// Count returns how many matching requests went through.
func (c *Counter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// DumpKV returns every path and every version of every secret under base in the KV v2
// mount, as text, for tests that scan Vault for what must not be there.
func (s *Server) DumpKV(t testing.TB, mount, base string) string {
	t.Helper()
	c := s.Client(t, nil)
	ctx := context.Background()
	var b strings.Builder
	var walk func(dir string)
	walk = func(dir string) {
		sec, err := c.Logical().ListWithContext(ctx, mount+"/metadata/"+dir)
		if err != nil {
			t.Fatal(err)
		}
		if sec == nil {
			return
		}
		keys, _ := sec.Data["keys"].([]any)
		for _, k := range keys {
			name, _ := k.(string)
			p := dir + "/" + strings.TrimSuffix(name, "/")
			b.WriteString(p + "\n")
			if strings.HasSuffix(name, "/") {
				walk(p)
				continue
			}
			versions, err := c.KVv2(mount).GetVersionsAsList(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range versions {
				sec, err := c.KVv2(mount).GetVersion(ctx, p, v.Version)
				if err != nil {
					t.Fatal(err)
				}
				j, _ := json.Marshal(sec.Data)
				b.Write(j)
				b.WriteByte('\n')
			}
		}
	}
	walk(base)
	return b.String()
}

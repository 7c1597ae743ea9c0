package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/safebuf"
)

// process is a "keygate serve" subprocess, for tests that send it signals.
type process struct {
	cmd                *exec.Cmd
	grpcAddr, httpAddr string
	logs               *safebuf.Buffer
	exited             chan struct{}
	client             authv3.AuthorizationClient
	health             healthpb.HealthClient
}

// startProcess runs keygate serve with the config file and waits until it is SERVING.
func startProcess(t *testing.T, configFile string) *process {
	t.Helper()
	v := vault(t)
	p := &process{grpcAddr: freeAddr(t), httpAddr: freeAddr(t), logs: &safebuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(keygateBinary(t), "serve", "--config", configFile, "--grpc-addr", p.grpcAddr, "--http-addr", p.httpAddr, "--admin-addr", "")
	p.cmd.Env = append(os.Environ(), v.Env()...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Error("keygate did not stop on SIGTERM")
		}
	})
	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.client, p.health = authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for !p.serving() {
		select {
		case <-p.exited:
			t.Fatalf("keygate exited:\n%s", p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("keygate not serving:\n%s", p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *process) serving() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := p.health.Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

// hup sends SIGHUP, waits until keygate logged the end of its n-th reload and returns
// what it logged during that reload; it fails if keygate exits.
func (p *process) hup(t *testing.T, n int) string {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, func(logs string) bool { return nthIndex(logs, "SIGHUP: reload done", n) >= 0 }, fmt.Sprintf("the end of reload #%d", n))
	logs := p.logs.String()
	return logs[nthIndex(logs, "SIGHUP: reloading", n):nthIndex(logs, "SIGHUP: reload done", n)]
}

func (p *process) waitLog(t *testing.T, cond func(string) bool, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond(p.logs.String()) {
		select {
		case <-p.exited:
			t.Fatalf("keygate exited (%v) waiting for %s:\n%s", p.cmd.ProcessState, what, p.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("never logged %s:\n%s", what, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nthIndex(s, sub string, n int) int {
	at := -1
	for range n {
		i := strings.Index(s[at+1:], sub)
		if i < 0 {
			return -1
		}
		at += 1 + i
	}
	return at
}

// TestSIGHUPWithoutTLS: SIGHUP never stops keygate (it used to exit 129 with no TLS
// listener); it reloads log_level, keeps the old settings when the file is broken, and
// says which changes need a restart.
func TestSIGHUPWithoutTLS(t *testing.T) {
	base := useVault(t)
	body := fmt.Sprintf("vault: {path: %s}\n", base)
	cfg := writeConfig(t, body+"log_level: info\n")
	k := createKey(t, vault(t), base)
	p := startProcess(t, cfg)
	check := func() {
		t.Helper()
		if code := p.check(t, k.Key, nil); code != 200 {
			t.Fatalf("a valid key got %d after SIGHUP", code)
		}
	}
	for i := 1; i <= 3; i++ {
		if got := p.hup(t, i); strings.Contains(got, "error") || strings.Contains(got, "restart") {
			t.Fatalf("an unchanged config reloaded with:\n%s", got)
		}
		check()
	}
	if strings.Contains(p.logs.String(), `"msg":"allowed"`) {
		t.Fatal("debug lines at log_level info")
	}
	// log_level applies live; a new cache size needs a restart, and says so.
	rewrite(t, cfg, body+"log_level: debug\ncache: {size: 500}\n")
	got := p.hup(t, 4)
	if !strings.Contains(got, `"msg":"log level changed","from":"info","to":"debug"`) || !strings.Contains(got, `"fields":"cache"`) {
		t.Fatalf("reload after a change:\n%s", got)
	}
	check()
	p.waitLog(t, func(l string) bool { return strings.Contains(l, `"msg":"allowed"`) }, "a debug line after log_level: debug")

	// A broken file keeps the old settings, is logged and counted.
	rewrite(t, cfg, body+"log_level: verbose\n")
	if got := p.hup(t, 5); !strings.Contains(got, "config reload failed; keeping the old settings") {
		t.Fatalf("a bad log_level:\n%s", got)
	}
	rewrite(t, cfg, "vault: [not, a, map\n")
	if got := p.hup(t, 6); !strings.Contains(got, "config reload failed; keeping the old settings") {
		t.Fatalf("broken YAML:\n%s", got)
	}
	check()
	m := scrape(t, "http://"+p.httpAddr+"/metrics")
	if v, _ := sum(m, "keygate_config_reload_failures_total"); v != 2 {
		t.Errorf("keygate_config_reload_failures_total = %v, want 2", v)
	}
	if v, _ := sum(m, "keygate_config_reloads_total"); v != 4 {
		t.Errorf("keygate_config_reloads_total = %v, want 4", v)
	}
	if !p.serving() {
		t.Fatal("not serving after six SIGHUPs")
	}
}

// TestSIGHUPReloadsTLS: with TLS listeners, SIGHUP swaps the certificate at once (the
// poll interval is an hour here), and a broken file keeps the old one.
func TestSIGHUPReloadsTLS(t *testing.T) {
	base := useVault(t)
	pki := newSitePKI(t)
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
tls:
  http: {cert_file: %s, key_file: %s}
  reload_interval: 1h
`, base, pki.serverCert, pki.serverKey))
	p := startProcess(t, cfg)
	served := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", p.httpAddr, pki.clientTLS(t, false))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "keygate" {
		t.Fatalf("served %q", cn)
	}
	next, err := certsIssueFor(pki, "keygate v2")
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, pki.serverKey, next.KeyPEM)
	rewrite(t, pki.serverCert, next.CertPEM)
	if got := p.hup(t, 1); !strings.Contains(got, `"what":"tls http"`) {
		t.Fatalf("SIGHUP did not reload the certificate:\n%s", got)
	}
	if cn := served(); cn != "keygate v2" {
		t.Fatalf("after SIGHUP: served %q", cn)
	}
	rewrite(t, pki.serverCert, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
	if got := p.hup(t, 2); !strings.Contains(got, "reload failed; keeping the old state") {
		t.Fatalf("a broken certificate:\n%s", got)
	}
	if cn := served(); cn != "keygate v2" {
		t.Fatalf("after a broken reload: served %q", cn)
	}
	if !p.serving() {
		t.Fatal("not serving")
	}
}

// check sends an Envoy-shaped request with a key (or none) and the client certificate
// Envoy saw (PEM, or none), and returns the HTTP status.
func (p *process) check(t *testing.T, key string, certPEM []byte) int {
	t.Helper()
	headers := map[string]string{}
	if key != "" {
		headers["x-api-key"] = key
	}
	src := &authv3.AttributeContext_Peer{}
	if certPEM != nil {
		src.Certificate = url.PathEscape(string(certPEM))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := p.client.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: src,
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/models", Headers: headers}}}})
	if err != nil {
		t.Fatalf("%v\n%s", err, p.logs)
	}
	if resp.GetOkResponse() != nil {
		return http.StatusOK
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// rewrite replaces a file's contents in place, as an editor or keygate certs does.
func rewrite[T string | []byte](t *testing.T, name string, b T) {
	t.Helper()
	if err := os.WriteFile(name, []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// certsIssueFor issues another server certificate for 127.0.0.1 from the site CA.
func certsIssueFor(p *sitePKI, cn string) (certs.Bundle, error) {
	return certs.Issue(p.ca, certs.IssueOptions{CommonName: cn, Server: true, DNSNames: []string{"127.0.0.1", "localhost"}, TTL: time.Hour})
}

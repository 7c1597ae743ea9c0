package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/safebuf"
)

// sitePKI makes a CA, a server certificate for 127.0.0.1 and a client certificate, as
// files.
type sitePKI struct {
	caFile, serverCert, serverKey string
	caPEM                         []byte
	ca, client                    certs.Bundle
}

func newSitePKI(t *testing.T) *sitePKI {
	t.Helper()
	dir := t.TempDir()
	ca, err := certs.NewCA("site CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := certs.Issue(ca, certs.IssueOptions{CommonName: "keygate", Server: true, DNSNames: []string{"127.0.0.1", "localhost"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := &sitePKI{caPEM: ca.CertPEM, ca: ca}
	p.client, err = certs.Issue(ca, certs.IssueOptions{CommonName: "envoy", SPIFFEID: "spiffe://example.org/ns/edge/sa/envoy", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.caFile, p.serverCert, p.serverKey = write("ca.pem", ca.CertPEM), write("server.pem", srv.CertPEM), write("server-key.pem", srv.KeyPEM)
	return p
}

func (p *sitePKI) clientTLS(t *testing.T, withCert bool) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	c := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	if withCert {
		kp, err := tls.X509KeyPair(p.client.CertPEM, p.client.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c
}

// TestListenersOverTLS: Envoy → keygate over mTLS (gRPC with ALPN h2), health over TLS.
func TestListenersOverTLS(t *testing.T) {
	base := useVault(t)
	p := newSitePKI(t)
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
tls:
  grpc: {cert_file: %s, key_file: %s, client_ca_file: %s, require_client_cert: true}
  http: {cert_file: %s, key_file: %s}
`, base, p.serverCert, p.serverKey, p.caFile, p.serverCert, p.serverKey))
	k := createKey(t, vault(t), base)
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var logs safebuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--admin-addr", ""}, &logs, &logs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: p.clientTLS(t, false)}}
	waitUntilOK(t, func() bool {
		resp, err := hc.Get("https://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	check := func(withCert bool) error {
		conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS(t, withCert))))
		if err != nil {
			return err
		}
		defer conn.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer ccancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(cctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/v1/models", Headers: map[string]string{"x-api-key": k.Key}}}}})
		if err == nil && resp.GetOkResponse() == nil {
			err = fmt.Errorf("denied: %s", resp.GetDeniedResponse().GetBody())
		}
		return err
	}
	if err := check(true); err != nil {
		t.Fatalf("Envoy with its client certificate: %v", err)
	}
	if err := check(false); err == nil {
		t.Fatal("a gRPC client without a certificate was served")
	}
	// Plain HTTP to the TLS listener gets Go's 400, never health.
	if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the health listener answered plain HTTP")
		}
	}
}

func waitUntilOK(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("serve never became ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckCommandOverTLS: keygate check reaches an mTLS gRPC listener with
// --cacert/--cert/--key/--server-name, and sends a body (--body, --body-file) that a
// model route reads.
func TestCheckCommandOverTLS(t *testing.T) {
	base := useVault(t)
	p := newSitePKI(t)
	dir := t.TempDir()
	clientCert, clientKey := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(clientCert, p.client.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(clientKey, p.client.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
policy:
  routes: [{name: chat, path: /v1/chat/completions, models: true}]
tls:
  grpc: {cert_file: %s, key_file: %s, client_ca_file: %s, require_client_cert: true}
`, base, p.serverCert, p.serverKey, p.caFile))
	out, stderr, err := cli(t, "keys", "create", "--owner", "acct_test", "--vault-path", base, "--name", "models", "--models", "gpt-4o", "--json")
	if err != nil {
		t.Fatalf("keys create: %v\n%s", err, stderr)
	}
	var k createdKey
	if err := json.Unmarshal([]byte(out), &k); err != nil {
		t.Fatal(err)
	}
	grpcAddr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	var logs safebuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--grpc-addr", grpcAddr, "--http-addr", "", "--admin-addr", ""}, &logs, &logs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	bodyFile := filepath.Join(dir, "body.json")
	if err := os.WriteFile(bodyFile, []byte(`{"model":"gpt-4o"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsArgs := []string{"check", "--addr", grpcAddr, "--cacert", p.caFile, "--cert", clientCert, "--key", clientKey,
		"--server-name", "127.0.0.1", "--method", "POST", "--path", "/v1/chat/completions", "-H", "x-api-key: " + k.Key}
	waitUntilOK(t, func() bool {
		_, _, err := cli(t, append(tlsArgs, "--body-file", bodyFile)...)
		return err == nil
	})
	if out, _, err := cli(t, append(tlsArgs, "--body", `{"model":"gpt-3.5"}`)...); !errors.Is(err, exitCode(3)) || !strings.Contains(out, "DENY 403") {
		t.Fatalf("a model outside the key's list: %v\n%s", err, out)
	}
	// Without the client certificate the listener refuses the connection.
	if _, _, err := cli(t, "check", "--addr", grpcAddr, "--cacert", p.caFile, "--server-name", "127.0.0.1", "--timeout", "2s"); err == nil || errors.Is(err, exitCode(3)) {
		t.Fatalf("check without a client certificate: %v", err)
	}
	if _, _, err := cli(t, "check", "--addr", grpcAddr, "--cert", clientCert); err == nil || !strings.Contains(err.Error(), "--cert and --key go together") {
		t.Fatalf("--cert without --key: %v", err)
	}
}

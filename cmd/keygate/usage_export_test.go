package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keygate/keygate/internal/certtest"
	"github.com/keygate/keygate/internal/otlptest"
)

// TestUsageExportOTLP runs keygate serve with the OTLP export and no store, sending to
// a real OTLP/gRPC receiver over mTLS that refuses the first two exports: once it
// recovers, it holds the exact counts per key, minute, route, model and outcome of a
// scripted run, each check once, with ids and no key material; the admin API's usage
// routes say there is no store.
func TestUsageExportOTLP(t *testing.T) {
	ca := certtest.NewCA(t, "otlp")
	srv := ca.Issue(t, certtest.LeafOptions{CommonName: "receiver", Server: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	client := ca.Issue(t, certtest.LeafOptions{CommonName: "keygate"})
	pair, err := tls.X509KeyPair(srv.CertPEM, srv.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r := otlptest.Start(t, &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	r.Refuse(1, 2)

	base := useVault(t)
	cfgFile := writeConfig(t, fmt.Sprintf(`vault:
  path: %s
usage:
  export: otlp
  flush: 1s
  otlp: {endpoint: %q, ca_file: %s, cert_file: %s, key_file: %s, timeout: 5s}
policy:
  deny_unmatched: true
  routes:
  - {name: chat, methods: [POST], path: /v1/chat/completions, scope: chat, models: true}
  - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
`, base, r.Addr, ca.CertFile, client.CertFile, client.KeyFile))
	if out, stderr, err := cli(t, "config", "validate", "--config", cfgFile); err != nil {
		t.Fatalf("config validate: %v\n%s%s", err, out, stderr)
	}
	mk := func(owner string, extra ...string) createdKey {
		t.Helper()
		return cliKey(t, base, owner, "k "+owner, extra...)
	}
	app := mk("acct_a", "--scopes", "chat,models:read", "--models", "gpt-4o*")
	other := mk("acct_b", "--scopes", "models:read")
	ops := mk("acct_ops", "--scopes", "admin")

	adminAddr := freeAddr(t)
	grpcAddr, _, logs := startServe(t, "--config", cfgFile, "--admin-addr", adminAddr)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client2 := authv3.NewAuthorizationClient(conn)

	if s := time.Now().Second(); s >= 50 { // keep the run in one minute
		time.Sleep(time.Duration(61-s) * time.Second)
	}
	minute := time.Now().UTC().Truncate(time.Minute).Format("15:04")
	send := func(times int, key, method, path, model string, want int) {
		t.Helper()
		for range times {
			usageCheck(t, client2, key, method, path, model, want)
		}
	}
	send(5, app.Key, "POST", "/v1/chat/completions", "gpt-4o", 200)
	send(2, app.Key, "POST", "/v1/chat/completions", "o1", 403)
	send(4, app.Key, "GET", "/v1/models", "", 200)
	send(1, app.Key, "GET", "/v1/files", "", 403)
	send(3, other.Key, "GET", "/v1/models", "", 200)
	send(2, other.Key, "POST", "/v1/chat/completions", "gpt-4o", 403)
	send(2, "mgx-sk-not-a-key", "GET", "/v1/models", "", 401)
	if time.Now().UTC().Truncate(time.Minute).Format("15:04") != minute {
		t.Fatal("the run crossed a minute")
	}

	deadline := time.Now().Add(15 * time.Second)
	for r.Total() < 19 {
		if time.Now().After(deadline) {
			t.Fatalf("the receiver holds %d checks, want 19 (calls %d)\n%s", r.Total(), r.Calls(), logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1500 * time.Millisecond) // one more flush: nothing more may come
	if r.Calls() < 3 {
		t.Errorf("the receiver was called %d times, want the two refused and more", r.Calls())
	}
	got := r.Counts(t)
	want := map[string]int64{
		minute + " " + app.ID + " acct_a chat gpt-4o allowed":        5,
		minute + " " + app.ID + " acct_a chat o1 model_not_allowed":  2,
		minute + " " + app.ID + " acct_a models  allowed":            4,
		minute + " " + app.ID + " acct_a   no_route":                 1,
		minute + " " + other.ID + " acct_b models  allowed":          3,
		minute + " " + other.ID + " acct_b chat  insufficient_scope": 2, // the model is read after the scope
		minute + "   models  malformed_key":                          2,
	}
	if len(got) != len(want) {
		t.Errorf("received %v\nwant %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("received %q = %d, want %d", k, got[k], n)
		}
	}
	for k := range got {
		for _, key := range []string{app.Key, other.Key, ops.Key, "mgx-sk-not-a-key"} {
			if strings.Contains(k, key) {
				t.Errorf("a key in an exported point: %q", k)
			}
		}
	}
	for _, res := range r.Resources() {
		if res["service.name"] != "keygate" || res["service.instance.id"] == "" {
			t.Errorf("resource %v: want service.name keygate and a service.instance.id", res)
		}
	}
	if !strings.Contains(logs.String(), "usage flush failed") {
		t.Errorf("the refused exports were not logged:\n%s", logs)
	}

	// No store: the usage routes say so.
	req, _ := http.NewRequest("GET", "http://"+adminAddr+"/api-keys/"+app.ID+"/usage", nil)
	req.Header.Set("Authorization", "Bearer "+ops.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 501 || !strings.Contains(string(raw), "USAGE_DISABLED") {
		t.Errorf("usage API without a store: %d %s", resp.StatusCode, raw)
	}
}

// TestUsageExportConfig: config validate reports each bad usage export setting.
func TestUsageExportConfig(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"export":         {"usage: {export: otel}\n", `usage.export: "otel": want otlp, or nothing (off) (line 1)`},
		"store":          {"usage: {store: mysql}\n", `usage.store: "mysql": want sqlite, postgres, or nothing (off) (line 1)`},
		"postgres dsn":   {"usage: {store: postgres}\n", "usage.store: postgres needs postgres_dsn or postgres_dsn_file"},
		"endpoint":       {"usage: {export: otlp, otlp: {endpoint: collector}}\n", `usage.otlp.endpoint: "collector": want host:port`},
		"insecure tls":   {"usage: {export: otlp, otlp: {insecure: true, ca_file: x.pem}}\n", "usage.otlp.insecure: plaintext excludes ca_file"},
		"half a pair":    {"usage: {export: otlp, otlp: {cert_file: c.pem}}\n", "usage.otlp.cert_file: cert_file and key_file go together"},
		"ca file":        {fmt.Sprintf("usage: {export: otlp, otlp: {ca_file: %s}}\n", garbage), "usage.otlp.ca_file: " + garbage + " holds no PEM certificate"},
		"missing ca":     {"usage: {export: otlp, otlp: {ca_file: /nonexistent/ca.pem}}\n", "usage.otlp.ca_file: open /nonexistent/ca.pem: no such file"},
		"flush":          {"usage: {export: otlp, flush: 1h30m}\n", "usage: usage flush 1h30m0s: want 1s to 1h"},
		"negative":       {"usage: {export: otlp, otlp: {timeout: -1s}}\n", "usage.otlp.timeout: must not be negative"},
		"valid":          {"usage: {export: otlp, otlp: {endpoint: 127.0.0.1:4317, insecure: true}}\n", ""},
		"export alone":   {"usage: {export: otlp}\n", ""},
		"store and otlp": {fmt.Sprintf("usage: {store: sqlite, sqlite_path: %s, export: otlp}\n", filepath.Join(dir, "u.db")), ""},
	} {
		t.Run(name, func(t *testing.T) {
			f := writeConfig(t, tc.body)
			out, stderr, err := cli(t, "config", "validate", "--config", f)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("%v\n%s%s", err, out, stderr)
				}
				return
			}
			if err == nil || !strings.Contains(out+stderr, tc.want) {
				t.Errorf("err %v, output:\n%s%s\nwant %q", err, out, stderr, tc.want)
			}
		})
	}
}

package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/safebuf"
)

// upstream is the application behind the terminator: it echoes what it received,
// streams, and speaks a tiny upgraded protocol.
func upstream(t *testing.T, release chan struct{}) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(map[string]any{"headers": r.Header, "body": string(body), "proto": r.Proto,
			"trailers": r.Trailer, "host": r.Host})
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		// A stock ServeMux routes %63hat to this handler too: only keygate stands
		// between a key without the scope and it.
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"reached":"chat","path":%q}`, r.URL.EscapedPath())
	})
	mux.HandleFunc("/v1/models", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"object":"list","data":[{"id":"mx4-atlas-core","object":"model","created":0,"owned_by":"mx4"}]}`)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "first")
		w.(http.Flusher).Flush()
		<-release
		fmt.Fprintln(w, "second")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required", http.StatusUpgradeRequired)
			return
		}
		conn, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprint(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		fmt.Fprint(rw, "echo: "+line)
		rw.Flush()
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

type termFixture struct {
	addr       string
	pki        *sitePKI
	dir        string
	key        createdKey
	clientCert string // files, for curl and openssl
	clientKey  string
	release    chan struct{}
}

func startTerminator(t *testing.T) *termFixture { return startTerminatorWith(t, "") }

// startTerminatorWith starts the terminator with extra configuration (YAML, top level).
// dialHTTP1 opens a TLS connection to the terminator with the client certificate,
// speaking HTTP/1.1, for requests written by hand; it is closed when t ends.
func (fx *termFixture) dialHTTP1(t *testing.T) *tls.Conn {
	t.Helper()
	cfg := fx.pki.clientTLS(t, true)
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := tls.Dial("tcp", fx.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func startTerminatorWith(t *testing.T, extra string) *termFixture {
	t.Helper()
	base := useVault(t)
	fx := &termFixture{pki: newSitePKI(t), dir: t.TempDir(), release: make(chan struct{})}
	up := upstream(t, fx.release)
	fx.clientCert, fx.clientKey = filepath.Join(fx.dir, "client.pem"), filepath.Join(fx.dir, "client-key.pem")
	for f, b := range map[string][]byte{fx.clientCert: fx.pki.client.CertPEM, fx.clientKey: fx.pki.client.KeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fx.key = createKey(t, vault(t), base, "models:read")
	fx.addr = freeAddr(t)
	cfg := writeConfig(t, fmt.Sprintf(`vault: {path: %s}
deny_profile: openai
tls: {reload_interval: 50ms}
terminate:
  tls: {cert_file: %s, key_file: %s, client_ca_file: %s}
%s
`, base, fx.pki.serverCert, fx.pki.serverKey, fx.pki.caFile, extra))
	ctx, cancel := context.WithCancel(context.Background())
	var logs safebuf.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--grpc-addr", freeAddr(t), "--http-addr", "", "--admin-addr", "",
			"--terminate", fx.addr, "--upstream", up.URL}, &logs, &logs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	client := fx.client(t, true)
	waitUntilOK(t, func() bool {
		resp, err := client.Get("https://" + fx.addr + "/echo")
		if err == nil {
			resp.Body.Close()
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v\n%s", err, logs.String())
		default:
		}
		return err == nil
	})
	return fx
}

func (fx *termFixture) client(t *testing.T, withCert bool) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: fx.pki.clientTLS(t, withCert), ForceAttemptHTTP2: true}}
}

func (fx *termFixture) get(t *testing.T, c *http.Client, path, key string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "https://"+fx.addr+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("X-API-Key-ID", "key_spoofed") // must not reach the upstream
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestTerminator(t *testing.T) {
	fx := startTerminator(t)
	c := fx.client(t, true)

	t.Run("allowed, over HTTP/2, identity for the upstream", func(t *testing.T) {
		resp, body := fx.get(t, c, "/echo", fx.key.Key)
		if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" {
			t.Fatalf("%s %d: %s", resp.Proto, resp.StatusCode, body)
		}
		var seen struct {
			Headers http.Header `json:"headers"`
		}
		if err := json.Unmarshal([]byte(body), &seen); err != nil {
			t.Fatal(err)
		}
		h := seen.Headers
		if h.Get("X-Api-Key-Id") != fx.key.ID || h.Get("Authorization") != "" || len(h.Values("X-Api-Key-Id")) != 1 {
			t.Fatalf("upstream headers %v", h)
		}
		x := h.Get("X-Forwarded-Client-Cert")
		if els, err := certs.ParseXFCC(x); err != nil || len(els) != 1 || els[0].Hash == "" ||
			len(els[0].URI) != 1 || els[0].URI[0] != "spiffe://example.org/ns/edge/sa/envoy" {
			t.Fatalf("XFCC %q: %v", x, err)
		}
		if resp.Header.Get("X-API-Key-ID") != fx.key.ID || resp.Header.Get("X-Request-ID") == "" {
			t.Fatalf("client headers %v", resp.Header)
		}
	})
	t.Run("no key: the profile's 401", func(t *testing.T) {
		resp, body := fx.get(t, c, "/echo", "")
		if resp.StatusCode != 401 || body != `{"error":{"message":"Your API key is missing or invalid.","type":"invalid_request_error","param":null,"code":"missing_api_key"}}` {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	})
	t.Run("streaming", func(t *testing.T) {
		req, _ := http.NewRequest("GET", "https://"+fx.addr+"/stream", nil)
		req.Header.Set("X-API-Key", fx.key.Key)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first chunk %q %v (the upstream still holds the rest)", line, err)
		}
		close(fx.release)
	})
	t.Run("WebSocket upgrade", func(t *testing.T) {
		conn := fx.dialHTTP1(t)
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: api\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-API-Key: %s\r\n\r\n", fx.key.Key)
		rd := bufio.NewReader(conn)
		resp, err := http.ReadResponse(rd, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		fmt.Fprint(conn, "ping\n")
		if line, err := rd.ReadString('\n'); err != nil || line != "echo: ping\n" {
			t.Fatalf("after the upgrade: %q %v", line, err)
		}
	})
	t.Run("curl", func(t *testing.T) {
		out, err := exec.Command("curl", "-sS", "--cert", fx.clientCert, "--key", fx.clientKey, "--cacert", fx.pki.caFile,
			"-H", "Authorization: Bearer "+fx.key.Key, "https://"+fx.addr+"/echo").CombinedOutput()
		if err != nil || !strings.Contains(string(out), fx.key.ID) {
			t.Fatalf("curl with a key: %v\n%s", err, out)
		}
		out, _ = exec.Command("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", fx.pki.caFile,
			"https://"+fx.addr+"/echo").CombinedOutput()
		if strings.HasSuffix(string(out), "200") {
			t.Fatalf("curl without a client certificate got through: %s", out)
		}
	})
	t.Run("openssl s_client", func(t *testing.T) {
		noCert := exec.Command("openssl", "s_client", "-connect", fx.addr, "-CAfile", fx.pki.caFile, "-brief")
		noCert.Stdin = slowEOF()
		if out, err := noCert.CombinedOutput(); err == nil || !strings.Contains(string(out), "alert") {
			t.Fatalf("handshake without a certificate was not refused (%v):\n%s", err, out)
		}
		withCert := exec.Command("openssl", "s_client", "-connect", fx.addr, "-CAfile", fx.pki.caFile,
			"-cert", fx.clientCert, "-key", fx.clientKey, "-quiet", "-alpn", "http/1.1")
		withCert.Stdin = strings.NewReader("GET /echo HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
		out, _ := withCert.CombinedOutput()
		if !strings.Contains(string(out), "401") || !strings.Contains(string(out), `"code":"missing_api_key"`) {
			t.Fatalf("good certificate, no key: want the profile's 401:\n%s", out)
		}
	})
}

// raw sends hand-written HTTP/1.1 bytes over a TLS connection with the client
// certificate, and reads one response.
func (fx *termFixture) raw(t *testing.T, request string) (*http.Response, string) {
	t.Helper()
	conn := fx.dialHTTP1(t)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// upstreamSaw is what the echo upstream recorded.
type upstreamSaw struct {
	Headers  http.Header `json:"headers"`
	Trailers http.Header `json:"trailers"`
	Body     string      `json:"body"`
}

// TestTerminatorBuildsTheUpstreamRequest sends, with a valid key, every way a client
// might forge or strip the identity keygate gives the upstream: Connection naming the
// identity headers, '_' spellings (which CGI-style servers read as '-'), mixed case,
// duplicates, forged XFCC and Client-Cert, and request trailers (declared and not)
// carrying credentials and identity. The upstream must see exactly keygate's values.
func TestTerminatorBuildsTheUpstreamRequest(t *testing.T) {
	fx := startTerminator(t)
	forged := []string{
		"Connection: close, X-Api-Key-Id, X-Api-Key-Scopes, x-forwarded-client-cert, x-request-id, X-Forwarded-For",
		"X_Api_Key_Id: key_forged", "X_Api_Key_Scopes: admin", "x_api_key_name: forged", "X_API_KEY_ID: key_forged",
		"x-api-key-id: key_forged", "X-API-KEY-ID: key_forged", "X-Api-Key-Scopes: admin", "x-api-key-scopes: admin",
		"X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://example.org/ns/prod/sa/admin",
		"x_forwarded_client_cert: URI=spiffe://example.org/ns/prod/sa/admin", "Client-Cert: :AAAA:", "client_cert: :AAAA:",
		"X_Request_Id: forged", "X_Forwarded_For: 10.0.0.1", "x_forwarded_proto: http", "Forwarded: for=10.0.0.1",
		"X_Api_Key: mgx-sk-forged", "Authorization_: x", "authorization_x: y",
	}
	for name, tc := range map[string]struct{ body, trailer string }{
		"content-length body":               {body: "Content-Length: 5\r\n\r\nhello"},
		"chunked body with trailers":        {body: "Transfer-Encoding: chunked\r\nTrailer: Authorization, X-Api-Key-Id, X_Api_Key_Scopes\r\n\r\n5\r\nhello\r\n0\r\n", trailer: "Authorization: Bearer mgx-sk-forged\r\nX-Api-Key-Id: key_forged\r\nX_Api_Key_Scopes: admin\r\nX-Undeclared: x\r\n\r\n"},
		"chunked body, undeclared trailers": {body: "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n", trailer: "X-Api-Key-Id: key_forged\r\nAuthorization: Bearer x\r\n\r\n"},
	} {
		t.Run(name, func(t *testing.T) {
			req := "POST /echo HTTP/1.1\r\nHost: api.example.com\r\nX-API-Key: " + fx.key.Key + "\r\n" +
				strings.Join(forged, "\r\n") + "\r\n" + tc.body + tc.trailer
			resp, body := fx.raw(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("%d: %s", resp.StatusCode, body)
			}
			var saw upstreamSaw
			if err := json.Unmarshal([]byte(body), &saw); err != nil {
				t.Fatal(err)
			}
			h := saw.Headers
			for name, want := range map[string]string{
				"X-Api-Key-Id": fx.key.ID, "X-Api-Key-Scopes": "models:read", "X-Request-Id": resp.Header.Get("X-Request-Id"),
				"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com",
			} {
				if got := h.Values(name); len(got) != 1 || got[0] != want {
					t.Errorf("upstream %s: %q, want exactly %q", name, got, want)
				}
			}
			if got := h.Values("X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q", got)
			}
			if len(h.Values("X-Api-Key-Name")) != 1 {
				t.Errorf("X-Api-Key-Name %q", h.Values("X-Api-Key-Name"))
			}
			// Names that fold to nothing keygate sets or reads pass untouched.
			if h.Get("Authorization_") != "x" || h.Get("Authorization_x") != "y" {
				t.Errorf("unrelated underscore headers: %v", h)
			}
			for name := range h {
				if strings.ContainsAny(name, "_") && !strings.HasPrefix(name, "Authorization_") {
					t.Errorf("an underscore header reached the upstream: %s: %q", name, h.Values(name))
				}
			}
			for _, name := range []string{"Authorization", "X-Api-Key", "Client-Cert", "Forwarded", "Trailer"} {
				if v := h.Values(name); len(v) != 0 {
					t.Errorf("%s reached the upstream: %q", name, v)
				}
			}
			x := h.Values("X-Forwarded-Client-Cert")
			if len(x) != 1 {
				t.Fatalf("XFCC %q", x)
			}
			els, err := certs.ParseXFCC(x[0])
			if err != nil || len(els) != 1 || len(els[0].URI) != 1 || els[0].URI[0] != "spiffe://example.org/ns/edge/sa/envoy" {
				t.Errorf("XFCC %q: %+v %v", x[0], els, err)
			}
			if saw.Body != "hello" || len(saw.Trailers) != 0 {
				t.Errorf("body %q, trailers %v", saw.Body, saw.Trailers)
			}
		})
	}
}

// TestTerminatorRefusesH2C: an upgrade to cleartext HTTP/2 is refused with a 400 in
// every spelling; a WebSocket upgrade still works (TestTerminator).
func TestTerminatorRefusesH2C(t *testing.T) {
	fx := startTerminator(t)
	for name, headers := range map[string]string{
		"h2c":                  "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"h2c without settings": "Connection: Upgrade\r\nUpgrade: H2C\r\n",
		"h2c in a list":        "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n",
		"settings only":        "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
		"settings, underscore": "HTTP2_Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := fx.raw(t, "GET /echo HTTP/1.1\r\nHost: api\r\nX-API-Key: "+fx.key.Key+"\r\n"+headers+"\r\n")
			if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, fx.key.ID) {
				t.Fatalf("%d: %s", resp.StatusCode, body)
			}
		})
	}
}

// TestTerminatorBoundsTheBodyRead: when the check needs the body (here: keygate serve
// reads it for every request with one), a client sending it one byte a second is cut
// off with a 408 once the body timeout runs out.
// terminatorPolicy makes /echo a model route, so the check needs its body.
const terminatorPolicy = `policy:
  routes:
  - {name: chat, methods: [POST], path: /v1/chat/completions, scope: chat:completions, models: true}
  - {name: echo, methods: [POST], path: /echo, models: true}
  - {name: models, methods: [GET], prefix: /v1/models, scope: models:read}
  - {name: rest, prefix: /}`

func TestTerminatorBoundsTheBodyRead(t *testing.T) {
	fx := startTerminatorWith(t, terminatorPolicy)
	conn := fx.dialHTTP1(t)
	fmt.Fprintf(conn, "POST /echo HTTP/1.1\r\nHost: api\r\nX-API-Key: %s\r\nContent-Length: 1000\r\n\r\n", fx.key.Key)
	got := make(chan *http.Response, 1)
	go func() {
		_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
		resp, _ := http.ReadResponse(bufio.NewReader(conn), nil)
		got <- resp
	}()
	for i := 0; i < 60; i++ { // at most a minute; the default bound is 5 s
		select {
		case resp := <-got:
			if resp == nil || resp.StatusCode != http.StatusRequestTimeout {
				t.Fatalf("want a 408, got %v", resp)
			}
			t.Logf("cut off after %d bytes", i)
			return
		case <-time.After(time.Second):
		}
		_, _ = conn.Write([]byte("x"))
	}
	t.Fatal("a slow body held the connection for a minute")
}

// slowEOF is standard input that ends after a moment, so that s_client still listens
// when the server's verdict on its certificate arrives.
func slowEOF() io.Reader {
	pr, pw := io.Pipe()
	go func() { time.Sleep(500 * time.Millisecond); pw.Close() }()
	return pr
}

// TestTerminatorWithOpenAISDK points the official openai npm SDK at the terminator,
// with a client certificate: a bad key must surface as the SDK's AuthenticationError
// carrying the MX4 document's message.
func TestTerminatorWithOpenAISDK(t *testing.T) {
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatal("npm is needed for this test (Node ships on the machine)")
	}
	dir := t.TempDir()
	install := exec.Command("npm", "install", "--no-audit", "--no-fund", "--silent", "openai@4.95.0")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm install openai: %v\n%s", err, out)
	}
	fx := startTerminator(t)
	script := `
const fs = require('fs'); const https = require('https'); const OpenAI = require('openai');
const agent = new https.Agent({cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY), ca: fs.readFileSync(process.env.CA)});
const client = new OpenAI({apiKey: process.env.API_KEY, baseURL: process.env.BASE_URL, httpAgent: agent, maxRetries: 0});
client.models.list().then(() => console.log(JSON.stringify({ok: true})),
  e => console.log(JSON.stringify({name: e.constructor.name, status: e.status, message: e.message, code: e.code})));
`
	if err := os.WriteFile(filepath.Join(dir, "check.js"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	runSDK := func(apiKey string) map[string]any {
		cmd := exec.Command("node", "check.js")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CERT="+fx.clientCert, "KEY="+fx.clientKey, "CA="+fx.pki.caFile,
			"API_KEY="+apiKey, "BASE_URL=https://"+fx.addr+"/v1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("node: %v\n%s", err, out)
		}
		var res map[string]any
		if err := json.Unmarshal(out[strings.LastIndexByte(strings.TrimSpace(string(out)), '\n')+1:], &res); err != nil {
			t.Fatalf("node printed %s", out)
		}
		return res
	}
	bad := fx.key.Key[:len(fx.key.Key)-1] + "x"
	if bad == fx.key.Key {
		bad = fx.key.Key[:len(fx.key.Key)-1] + "y"
	}
	res := runSDK(bad)
	if res["name"] != "AuthenticationError" || res["status"] != float64(401) ||
		!strings.Contains(fmt.Sprint(res["message"]), "Your API key is missing or invalid.") || res["code"] != "invalid_api_key" {
		t.Fatalf("the SDK saw %v", res)
	}
	if res := runSDK(fx.key.Key); res["ok"] != true {
		t.Fatalf("the SDK with a valid key: %v", res)
	}
}

// TestTerminatorReloadUnderTraffic swaps the server certificate while requests flow:
// none fails, and new handshakes get the new certificate.
func TestTerminatorReloadUnderTraffic(t *testing.T) {
	fx := startTerminator(t)
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	loop := make(chan struct{})
	go func() {
		defer close(loop)
		keepAlive := fx.client(t, true)
		for i := 0; i < 20_000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := keepAlive
			if i%2 == 1 { // every other request on a new connection: a new handshake
				c = &http.Client{Transport: &http.Transport{TLSClientConfig: fx.pki.clientTLS(t, true), DisableKeepAlives: true}}
			}
			req, _ := http.NewRequest("GET", "https://"+fx.addr+"/echo", nil)
			req.Header.Set("X-API-Key", fx.key.Key)
			resp, err := c.Do(req)
			sent.Add(1)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		}
	}()
	// Requests flow before the swap and after it: counted, not timed (the machine may be slow).
	waitUntilOK(t, func() bool { return sent.Load() >= 5 })
	next, err := certs.Issue(fx.pki.ca, certs.IssueOptions{CommonName: "keygate rotated", Server: true, DNSNames: []string{"127.0.0.1"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{fx.pki.serverKey: next.KeyPEM, fx.pki.serverCert: next.CertPEM} {
		if err := os.WriteFile(f+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f+".tmp", f); err != nil {
			t.Fatal(err)
		}
	}
	waitUntilOK(t, func() bool {
		conn, err := tls.Dial("tcp", fx.addr, fx.pki.clientTLS(t, true))
		if err != nil {
			return false
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName == "keygate rotated"
	})
	after := sent.Load()
	waitUntilOK(t, func() bool { return sent.Load() >= after+5 })
	close(stop)
	<-loop
	t.Logf("%d requests while the certificate was swapped, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 || sent.Load() < 10 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), sent.Load(), firstErr.Load())
	}
}

// TestTerminatorCanonicalPolicy drives the terminator, with no Envoy in front to
// normalize anything, with the variants of a chat request and a key holding only
// models:read: a stock Go ServeMux upstream would route each to its chat handler, so
// each must be refused, and none may reach it.
func TestTerminatorCanonicalPolicy(t *testing.T) {
	fx := startTerminatorWith(t, terminatorPolicy)
	body := `{"model":"gpt-4o","messages":[]}`
	for _, tc := range []struct {
		method, target string
		status         int
	}{
		{"POST", "/v1/chat/completions", 403},
		{"POST", "/v1/%63hat/completions", 403},
		{"POST", "/v1/chat/completions/", 403},
		{"POST", "/V1/CHAT/COMPLETIONS", 403},
		{"POST", "/v1/chat/completions;x=1", 403},
		{"POST", "//v1/chat/completions", 403},
		{"POST", "/v1/./chat/completions", 403},
		{"POST", "/v1/models/../chat/completions", 403},
		{"POST", "/v1/chat%2Fcompletions", 400},
		{"POST", "/v1/models/..;/chat/completions", 400},
		{"POST", "/v1/chat/completions?_method=GET", 400},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			resp, got := fx.raw(t, fmt.Sprintf("%s %s HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
				tc.method, tc.target, fx.key.Key, len(body), body))
			if resp.StatusCode != tc.status || strings.Contains(got, "reached") {
				t.Fatalf("status %d (want %d): %s", resp.StatusCode, tc.status, got)
			}
		})
	}
	t.Run("a form body's _method is judged", func(t *testing.T) {
		form := "a=1&_method=DELETE"
		resp, got := fx.raw(t, fmt.Sprintf("POST /anything HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s",
			fx.key.Key, len(form), form))
		if resp.StatusCode != 400 {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
	})
	t.Run("the upstream gets the normalized path", func(t *testing.T) {
		resp, got := fx.raw(t, fmt.Sprintf("GET /v1/./x/..//%%6Dodels HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\n\r\n", fx.key.Key))
		if resp.StatusCode != 200 || !strings.Contains(got, "mx4-atlas-core") {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
	})
	t.Run("a request needing no body is decided on its headers", func(t *testing.T) {
		conn := fx.dialHTTP1(t)
		// No key, and a body that would take 1000 s to arrive: the 401 comes first.
		fmt.Fprint(conn, "POST /v1/images/x HTTP/1.1\r\nHost: api\r\nContent-Length: 1000\r\n\r\nx")
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("want the 401 before the body, got %v %v", resp, err)
		}
	})
}

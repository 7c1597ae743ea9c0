package terminator

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is a test upstream that counts the connections it accepted and records the
// raw request heads it read.
type upstream struct {
	*httptest.Server
	conns atomic.Int64
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// proxyThrough is the terminator's reverse proxy with its default transport, without
// the check: what the transport does is under test.
func proxyThrough(t *testing.T, up *upstream) (*httptest.Server, *upstreamTransport) {
	u, _ := url.Parse(up.URL)
	tr := newUpstreamTransport(NewTransport(nil))
	t.Cleanup(tr.CloseIdleConnections)
	p := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }, Transport: tr,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) { http.Error(w, err.Error(), 502) }}
	s := httptest.NewServer(p)
	t.Cleanup(s.Close)
	return s, tr
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, body)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp.Header
}

// TestTransportReusesOneConnection: sequential bodiless requests of every kind of
// response (fixed length, chunked, empty, HEAD, 204, 304) travel over one upstream
// connection, and each response arrives whole.
func TestTransportReusesOneConnection(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			for i := range 3 {
				_, _ = io.WriteString(w, strings.Repeat(string(rune('a'+i)), 5000))
				w.(http.Flusher).Flush()
			}
		case "/empty":
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			_, _ = io.WriteString(w, "hello "+r.Method)
		}
	})
	s, _ := proxyThrough(t, up)
	c := s.Client()
	want := map[string]string{"/fixed": "hello GET", "/chunked": strings.Repeat("a", 5000) + strings.Repeat("b", 5000) + strings.Repeat("c", 5000),
		"/empty": "", "/204": "", "/304": ""}
	for range 3 {
		for path, body := range want {
			if _, got, _ := do(t, c, "GET", s.URL+path, nil); got != body {
				t.Fatalf("GET %s: %q", path, got)
			}
		}
		if code, got, h := do(t, c, "HEAD", s.URL+"/fixed", nil); code != 200 || got != "" || h.Get("Content-Length") != "10" {
			t.Fatalf("HEAD: %d %q %v", code, got, h)
		}
		if _, got, _ := do(t, c, "OPTIONS", s.URL+"/fixed", nil); got != "hello OPTIONS" {
			t.Fatalf("OPTIONS: %q", got)
		}
	}
	if n := up.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections for sequential requests, want 1", n)
	}
}

// TestTransportUpstreamClosesIdle: when the upstream has closed the pooled connections,
// the next request is sent again on a new one and succeeds.
func TestTransportUpstreamClosesIdle(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	s, _ := proxyThrough(t, up)
	c := s.Client()
	for i := range 5 {
		if code, got, _ := do(t, c, "GET", s.URL+"/", nil); code != 200 || got != "ok" {
			t.Fatalf("request %d: %d %q", i, code, got)
		}
		up.CloseClientConnections()
	}
}

// TestTransportDoesNotReuse: a connection the upstream asks to close, or whose response
// was not read to its end, carries no other request.
func TestTransportDoesNotReuse(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
	})
	u, _ := url.Parse(up.URL)
	tr := newUpstreamTransport(NewTransport(nil))
	defer tr.CloseIdleConnections()
	get := func(path string, read bool) {
		req := httptest.NewRequest("GET", "http://"+u.Host+path, nil)
		req.RequestURI = ""
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if read {
			_, _ = io.Copy(io.Discard, resp.Body)
		} else {
			_, _ = resp.Body.Read(make([]byte, 10))
		}
		resp.Body.Close()
	}
	get("/close", true)
	get("/", false)
	get("/", true)
	get("/", true)
	if n := up.conns.Load(); n != 3 {
		t.Fatalf("%d upstream connections, want 3 (closed, abandoned, then one reused)", n)
	}
}

// TestTransportOthersGoThroughTheStandardOne: a request with a body, and a WebSocket
// upgrade, still reach the upstream as they did.
func TestTransportOthersGoThroughTheStandardOne(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "websocket" {
			conn, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer conn.Close()
			_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			_ = brw.Flush()
			line, _ := brw.ReadString('\n')
			_, _ = brw.WriteString("echo " + line)
			_ = brw.Flush()
			return
		}
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(b))
	})
	s, _ := proxyThrough(t, up)
	if _, got, _ := do(t, s.Client(), "POST", s.URL+"/", strings.NewReader("body")); got != "POST body" {
		t.Fatalf("POST: %q", got)
	}
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	_, _ = io.WriteString(conn, "ping\n")
	if line, _ := br.ReadString('\n'); line != "echo ping\n" {
		t.Fatalf("after the upgrade: %q", line)
	}
}

// TestTransportCancel: a client that goes away ends the wait for an upstream that has
// not answered, and the connection is not reused.
func TestTransportCancel(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	u, _ := url.Parse(up.URL)
	tr := newUpstreamTransport(NewTransport(nil))
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+u.Host+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := tr.RoundTrip(req)
		errc <- err
	}()
	cancel()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("a canceled request succeeded")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the canceled request still waits for the upstream")
	}
	once.Do(func() { close(release) })
	req, _ = http.NewRequest("GET", "http://"+u.Host+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("after a cancel: %q", b)
	}
}

// TestTransportEarlyHints: a 103 before the answer reaches the client, as through the
// standard transport.
func TestTransportEarlyHints(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		_, _ = io.WriteString(w, "ok")
	})
	s, _ := proxyThrough(t, up)
	conn, err := net.Dial("tcp", s.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(conn)
	first, err := http.ReadResponse(br, nil)
	if err != nil || first.StatusCode != http.StatusEarlyHints || first.Header.Get("Link") == "" {
		t.Fatalf("first: %v %v", first, err)
	}
	final, err := http.ReadResponse(br, nil)
	if err != nil || final.StatusCode != 200 {
		t.Fatalf("final: %v %v", final, err)
	}
	if b, _ := io.ReadAll(final.Body); string(b) != "ok" {
		t.Fatalf("body %q", b)
	}
}

// TestTransportBoundsTheResponseHead: a response head over the bound is refused (a 502
// through the proxy), as http.Transport refuses one over MaxResponseHeaderBytes.
func TestTransportBoundsTheResponseHead(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 200 OK\r\n")
		for range 1000 {
			_, _ = brw.WriteString("X-Filler: " + strings.Repeat("f", 1000) + "\r\n")
		}
		_, _ = brw.WriteString("Content-Length: 0\r\n\r\n")
		_ = brw.Flush()
	})
	u, _ := url.Parse(up.URL)
	tr := newUpstreamTransport(NewTransport(nil))
	defer tr.CloseIdleConnections()
	tr.maxHeader = 64 << 10
	req, _ := http.NewRequest("GET", "http://"+u.Host+"/", nil)
	if resp, err := tr.RoundTrip(req); !errors.Is(err, errHeadTooLarge) {
		t.Fatalf("%v, %v; want the head refused", resp, err)
	}
	tr.maxHeader = 10 << 20
	req, _ = http.NewRequest("GET", "http://"+u.Host+"/", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("within the bound: %v", err)
	}
	resp.Body.Close()
}

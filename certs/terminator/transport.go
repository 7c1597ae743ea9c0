package terminator

import (
	"bufio"
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"syscall"
	"time"
)

// upstreamTransport carries the requests most API calls are, a GET, HEAD or OPTIONS
// with no body and no upgrade to a plain http upstream, over its own keep-alive pool,
// writing the request and reading the response in the calling goroutine. Everything
// else (bodies, upgrades, https and HTTP/2 upstreams) goes through the standard
// transport. http.Transport hands every request to two goroutines per connection (one
// writes, one reads) and the body back through channels: under keep-alive load those
// hand-offs between goroutines and threads cost more CPU than the proxying itself.
//
// The request is written as http.Transport writes it (Request.Write), the response read
// as it reads it (http.ReadResponse), so the upstream sees the same bytes and the
// reverse proxy the same response. A connection is reused only after its response was
// read to the end with nothing left over and neither side asked to close it. A request
// that fails on a reused connection before any byte of the response arrived (the
// upstream closed it while idle) is sent once more on a new one: the methods taken here
// are idempotent.
type upstreamTransport struct {
	std         http.RoundTripper
	dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	maxIdle     int // per upstream address
	idleTimeout time.Duration
	maxHeader   int64 // bytes of a response head, as http.Transport's MaxResponseHeaderBytes

	mu   sync.Mutex
	idle map[string][]*upConn // by host:port, the most recently used last
}

// upConn is one keep-alive connection to the upstream.
type upConn struct {
	conn   net.Conn
	lim    *headLimit // under br
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
	reused bool
}

func newUpstreamTransport(std *http.Transport) *upstreamTransport {
	maxHeader := std.MaxResponseHeaderBytes
	if maxHeader == 0 {
		maxHeader = 10 << 20 // http.Transport's default
	}
	return &upstreamTransport{std: std, dial: std.DialContext, maxIdle: std.MaxIdleConnsPerHost,
		idleTimeout: std.IdleConnTimeout, maxHeader: maxHeader, idle: map[string][]*upConn{}}
}

// direct reports whether req is one the transport carries itself.
func direct(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return req.URL.Scheme == "http" && (req.Body == nil || req.Body == http.NoBody) && !req.Close &&
		len(req.Trailer) == 0 && req.Header["Upgrade"] == nil && req.Header["Connection"] == nil
}

// RoundTrip implements http.RoundTripper.
func (t *upstreamTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !direct(req) {
		return t.std.RoundTrip(req)
	}
	addr := req.URL.Host
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(req.URL.Hostname(), "80")
	}
	for {
		c, err := t.get(req.Context(), addr)
		if err != nil {
			return nil, err
		}
		resp, nothingRead, err := t.roundTrip(c, req)
		if err == nil {
			return resp, nil
		}
		if !c.reused || !nothingRead || !retryable(err) || req.Context().Err() != nil {
			return nil, err
		}
		// The upstream closed the idle connection: try the next one, or a new one.
	}
}

// retryable reports an error meaning the connection was closed before any of the
// response was read.
func retryable(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// errCanceled is returned when the request's context ends while the transport waits.
var errCanceled = errors.New("terminator: upstream request canceled")

// roundTrip sends req on c and reads the response head; the body is read by the caller.
// nothingRead is true when it failed before any byte of a response arrived.
func (t *upstreamTransport) roundTrip(c *upConn, req *http.Request) (_ *http.Response, nothingRead bool, _ error) {
	ctx := req.Context()
	// A client that goes away ends the wait for a model that may think for minutes.
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, bool, error) {
		if !stop() || ctx.Err() != nil {
			err = errors.Join(errCanceled, ctx.Err())
		}
		_ = c.conn.Close()
		return nil, nothingRead, err
	}
	nothingRead = true
	if err := req.Write(c.bw); err != nil {
		return fail(err)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err)
	}
	if _, err := c.br.Peek(1); err != nil { // io.EOF: closed with nothing sent
		return fail(err)
	}
	nothingRead = false
	for {
		c.lim.n = t.maxHeader + int64(c.br.Buffered())
		resp, err := http.ReadResponse(c.br, req)
		c.lim.n = math.MaxInt64
		if err != nil {
			return fail(err)
		}
		code := resp.StatusCode
		if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
			// An informational answer (103 Early Hints): passed on as http.Transport
			// does, then the final response follows.
			if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(code, textproto.MIMEHeader(resp.Header)); err != nil {
					return fail(err)
				}
			}
			continue
		}
		if code == http.StatusSwitchingProtocols { // never asked for here
			return fail(errors.New("terminator: the upstream switched protocols unasked"))
		}
		reuse := !resp.Close && resp.ProtoAtLeast(1, 1)
		if resp.Body == http.NoBody {
			t.done(c, stop, reuse)
			return resp, false, nil
		}
		resp.Body = &upBody{body: resp.Body, t: t, c: c, stop: stop, reuse: reuse}
		return resp, false, nil
	}
}

// done ends a request on c: the connection goes back to the pool when its response was
// read to the end, the request was not canceled and both sides keep it alive.
func (t *upstreamTransport) done(c *upConn, stop func() bool, complete bool) {
	if !stop() || !complete || c.br.Buffered() > 0 {
		_ = c.conn.Close()
		return
	}
	t.put(c)
}

// upBody is a response body that returns its connection to the pool at its end.
type upBody struct {
	body  io.ReadCloser
	t     *upstreamTransport
	c     *upConn
	stop  func() bool
	reuse bool
	over  bool
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.over {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err != nil {
		b.over = true
		b.t.done(b.c, b.stop, b.reuse && err == io.EOF)
	}
	return n, err
}

func (b *upBody) Close() error {
	if !b.over { // not read to the end: the connection cannot carry another request
		b.over = true
		b.t.done(b.c, b.stop, false)
	}
	return nil
}

// get returns an idle connection to addr, or a new one.
func (t *upstreamTransport) get(ctx context.Context, addr string) (*upConn, error) {
	t.mu.Lock()
	for l := t.idle[addr]; len(l) > 0; l = t.idle[addr] {
		c := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[addr] = l[:len(l)-1]
		if time.Since(c.idleAt) < t.idleTimeout {
			t.mu.Unlock()
			c.reused = true
			return c, nil
		}
		_ = c.conn.Close()
	}
	t.mu.Unlock()
	conn, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	lim := &headLimit{r: conn, n: math.MaxInt64}
	return &upConn{conn: conn, lim: lim, br: bufio.NewReader(lim), bw: bufio.NewWriter(conn), addr: addr}, nil
}

// headLimit bounds what is read from a connection while a response head is parsed.
type headLimit struct {
	r io.Reader
	n int64
}

var errHeadTooLarge = errors.New("terminator: the upstream's response head is too large")

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// put keeps c for the next request, and closes the connections idle for too long.
func (t *upstreamTransport) put(c *upConn) {
	now := time.Now()
	c.idleAt = now
	t.mu.Lock()
	l := t.idle[c.addr]
	for len(l) > 0 && now.Sub(l[0].idleAt) >= t.idleTimeout {
		_ = l[0].conn.Close()
		l[0] = nil
		l = l[1:]
	}
	keep := len(l) < t.maxIdle
	if keep {
		l = append(l, c)
	}
	t.idle[c.addr] = l
	t.mu.Unlock()
	if !keep {
		_ = c.conn.Close()
	}
}

// CloseIdleConnections closes the idle connections of both transports.
func (t *upstreamTransport) CloseIdleConnections() {
	t.mu.Lock()
	for addr, l := range t.idle {
		for _, c := range l {
			_ = c.conn.Close()
		}
		delete(t.idle, addr)
	}
	t.mu.Unlock()
	if ci, ok := t.std.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

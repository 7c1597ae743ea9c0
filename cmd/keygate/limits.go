package main

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// connLimits bounds the connections of every listener, so that no flood of idle or
// slow clients on one listener exhausts the process's file descriptors and starves the
// ext_authz listener.
type connLimits struct {
	// MaxHTTP caps the connections of each HTTP listener (health, admin, terminator).
	// At the cap a new connection closes the longest-idle one that has no request in
	// progress; when every connection is busy, the new one is closed.
	MaxHTTP int `json:"max_http"`
	// MaxGRPC caps the ext_authz listener's connections; over it new ones are closed.
	MaxGRPC           int            `json:"max_grpc"`
	ReadHeaderTimeout configDuration `json:"read_header_timeout"` // every HTTP listener
	// ReadTimeout and WriteTimeout bound one request on the health and admin listeners.
	// The terminator streams bodies both ways and has neither: only the header timeout
	// and the idle timeout.
	ReadTimeout    configDuration `json:"read_timeout"`
	WriteTimeout   configDuration `json:"write_timeout"`
	IdleTimeout    configDuration `json:"idle_timeout"`     // a keep-alive connection between requests
	MaxHeaderBytes int            `json:"max_header_bytes"` // request line and headers
	// GRPCMaxStreams is the concurrent RPCs per gRPC connection.
	GRPCMaxStreams uint32 `json:"grpc_max_concurrent_streams"`
	// GRPCIdleTimeout closes a gRPC connection with no RPC for this long (Envoy
	// reconnects on its next check); 0: never.
	GRPCIdleTimeout configDuration `json:"grpc_idle_timeout"`
	// GRPCHandshakeTimeout bounds a new gRPC connection's TLS and HTTP/2 handshake.
	GRPCHandshakeTimeout configDuration `json:"grpc_handshake_timeout"`
}

func defaultConnLimits() connLimits {
	return connLimits{
		MaxHTTP:              1024,
		MaxGRPC:              4096,
		ReadHeaderTimeout:    configDuration(5 * time.Second),
		ReadTimeout:          configDuration(30 * time.Second),
		WriteTimeout:         configDuration(30 * time.Second),
		IdleTimeout:          configDuration(60 * time.Second),
		MaxHeaderBytes:       64 << 10,
		GRPCMaxStreams:       1024,
		GRPCIdleTimeout:      configDuration(30 * time.Minute),
		GRPCHandshakeTimeout: configDuration(10 * time.Second),
	}
}

func (c *connLimits) validate() error {
	if c.MaxHTTP <= 0 || c.MaxGRPC <= 0 || c.MaxHeaderBytes <= 0 || c.GRPCMaxStreams == 0 {
		return errors.New("connections: max_http, max_grpc, max_header_bytes and grpc_max_concurrent_streams must be positive")
	}
	if c.ReadHeaderTimeout <= 0 || c.ReadTimeout <= 0 || c.WriteTimeout <= 0 || c.IdleTimeout <= 0 || c.GRPCHandshakeTimeout <= 0 || c.GRPCIdleTimeout < 0 {
		return errors.New("connections: the timeouts must be positive (grpc_idle_timeout may be 0: never)")
	}
	return nil
}

// httpServer returns an http.Server with the limits; streaming servers (the terminator)
// get no read or write timeout.
func (c *connLimits) httpServer(h http.Handler, streaming bool, log *slog.Logger) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Duration(c.ReadHeaderTimeout),
		IdleTimeout: time.Duration(c.IdleTimeout), MaxHeaderBytes: c.MaxHeaderBytes,
		ConnState: trackState, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)} // TLS handshake failures and the like
	if !streaming {
		srv.ReadTimeout, srv.WriteTimeout = time.Duration(c.ReadTimeout), time.Duration(c.WriteTimeout)
	}
	return srv
}

// grpcOptions are the ext_authz server's limits: streams per connection, handshake
// time, idle connections, and keepalive pings no more often than every 10 s.
func (c *connLimits) grpcOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(c.GRPCMaxStreams),
		grpc.ConnectionTimeout(time.Duration(c.GRPCHandshakeTimeout)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: time.Duration(c.GRPCIdleTimeout),
			Time: time.Minute, Timeout: 20 * time.Second}),
	}
}

// fdBudget warns when the connection caps together could exhaust the file descriptor
// limit, the failure the caps exist to prevent.
func (c *connLimits) fdBudget(httpListeners int, log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	need := uint64(c.MaxGRPC+httpListeners*c.MaxHTTP) + 256 // Vault, Redis, files, slack
	if need > lim.Cur {
		log.Warn("the connection caps exceed the open file limit: raise the limit (ulimit -n) or lower connections.max_http / max_grpc",
			slog.Uint64("needed", need), slog.Uint64("open_file_limit", lim.Cur))
	}
}

// capListener caps a listener's open connections. With evict, a new connection over
// the cap closes the longest-idle connection that has no request in progress (never
// sent one, or keep-alive idle between requests), so a flood of idle connections cannot
// lock legitimate clients out; when every connection is busy, or without evict, the
// new connection is closed at once.
type capListener struct {
	net.Listener
	name    string
	max     int
	evict   bool
	mu      sync.Mutex
	conns   map[*capConn]struct{}
	shed    atomic.Int64 // connections closed to respect the cap (evicted or refused)
	refused atomic.Int64 // of those, new connections closed because none could be evicted
}

func newCapListener(l net.Listener, name string, max int, evict bool) *capListener {
	return &capListener{Listener: l, name: name, max: max, evict: evict, conns: map[*capConn]struct{}{}}
}

// capConn is one connection of a capListener.
type capConn struct {
	net.Conn
	l     *capListener
	busy  atomic.Bool  // a request is in progress (or the connection was hijacked)
	since atomic.Int64 // when it last became idle (UnixNano)
	once  sync.Once
}

func (c *capConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var victim *capConn
		if len(l.conns) >= l.max {
			if l.evict {
				for cc := range l.conns {
					if !cc.busy.Load() && (victim == nil || cc.since.Load() < victim.since.Load()) {
						victim = cc
					}
				}
			}
			if victim == nil {
				l.mu.Unlock()
				l.shed.Add(1)
				l.refused.Add(1)
				_ = c.Close()
				continue
			}
			delete(l.conns, victim)
		}
		cc := &capConn{Conn: c, l: l}
		cc.since.Store(time.Now().UnixNano())
		l.conns[cc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.shed.Add(1)
			_ = victim.Close()
		}
		return cc, nil
	}
}

// open returns the number of open connections.
func (l *capListener) open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// trackState is an http.Server's ConnState hook: it tells a capListener which of its
// connections have a request in progress.
func trackState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	cc, ok := c.(*capConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive, http.StateHijacked:
		cc.busy.Store(true)
	case http.StateIdle:
		cc.since.Store(time.Now().UnixNano())
		cc.busy.Store(false)
	}
}

// registerConnMetrics exports each capped listener's open connections and the
// connections it closed to respect its cap.
func registerConnMetrics(listeners []*capListener) error {
	m := otel.Meter("github.com/keygate/keygate/cmd/keygate")
	open, err := m.Int64ObservableGauge("keygate.connections.open", metric.WithDescription("Open connections, by listener."))
	if err != nil {
		return err
	}
	shed, err := m.Int64ObservableCounter("keygate.connections.shed",
		metric.WithDescription("Connections closed to keep a listener under its cap (connections.max_http / max_grpc), by listener."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, l := range listeners {
			attrs := metric.WithAttributes(attribute.String("listener", l.name))
			o.ObserveInt64(open, int64(l.open()), attrs)
			o.ObserveInt64(shed, l.shed.Load(), attrs)
		}
		return nil
	}, open, shed)
	return err
}

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/hashicorp/vault/api"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/certs/terminator"
	"github.com/keygate/keygate/console"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/vaultstore"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// SIGHUP reloads; it must never stop keygate (Go's default), so it is caught for
	// serve's whole life, before anything else.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	fs := flag.NewFlagSet("keygate serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var common commonFlags
	common.register(fs)
	grpcAddr := fs.String("grpc-addr", "", "ext_authz gRPC listen address (default from config: 127.0.0.1:9001)")
	httpAddr := fs.String("http-addr", "", "health listen address (default from config: 127.0.0.1:9002)")
	adminAddr := fs.String("admin-addr", "", "admin API listen address (default from config: 127.0.0.1:9003)")
	terminate := fs.String("terminate", "", "run the mTLS terminator on this address (needs terminate.tls in the config)")
	upstream := fs.String("upstream", "", "the terminator's upstream URL")
	auditLog := fs.String("audit-log", "", "audit log: a file, or stdout (default from config: none)")
	profile := fs.String("deny-profile", "", "deny body profile: magicx, apikey, mythiq or openai (default from config: magicx)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default from config: info)")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	// load reads the config file and applies the flags: at start, and on SIGHUP.
	load := func() (config, error) {
		cfg, err := common.load(fs)
		if err != nil {
			return cfg, err
		}
		setFlags(fs, map[string]flagField{
			"grpc-addr":    {grpcAddr, &cfg.GRPCAddr},
			"http-addr":    {httpAddr, &cfg.HTTPAddr},
			"deny-profile": {profile, &cfg.DenyProfile},
			"log-level":    {logLevel, &cfg.LogLevel},
			"admin-addr":   {adminAddr, &cfg.AdminAddr},
			"audit-log":    {auditLog, &cfg.AuditLog},
			"terminate":    {terminate, &cfg.Terminate.Addr},
			"upstream":     {upstream, &cfg.Terminate.Upstream},
		})
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	level, err := cfg.logLevel()
	if err != nil {
		return err
	}
	lv := new(slog.LevelVar)
	lv.Set(level)
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lv}))
	return serve(ctx, cfg, stdout, log, &live{hup: hup, level: lv, config: load, current: cfg, log: log})
}

// serve runs the servers until ctx ends, then stops them gracefully: health reports
// NOT_SERVING first, in-flight checks get cfg.ShutdownGrace to finish, and the last
// usage times are flushed to Vault. lv reloads what can change live (SIGHUP).
func serve(ctx context.Context, cfg config, stdout io.Writer, log *slog.Logger, lv *live) error {
	if err := cfg.validate(true); err != nil {
		return err
	}
	format, err := cfg.format()
	if err != nil {
		return err
	}
	limits := cfg.Connections
	if err := limits.validate(); err != nil {
		return err
	}
	// Telemetry first: the store, cache and servers take their instruments from it.
	var certFiles []string
	for _, f := range []string{cfg.Vault.TLS.CACert, cfg.Vault.TLS.ClientCert, cfg.ClientCerts.CAFile} {
		if f != "" {
			certFiles = append(certFiles, f)
		}
	}
	for _, l := range []*listenerTLS{cfg.TLS.GRPC, cfg.TLS.HTTP, cfg.TLS.Admin, cfg.Terminate.TLS} {
		if l != nil {
			certFiles = append(certFiles, l.CertFile, l.ClientCAFile)
		}
	}
	tel, err := setupTelemetry(ctx, certFiles)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tel.shutdown(sctx)
	}()
	p, err := authz.ParseProfile(cfg.DenyProfile)
	if err != nil {
		return err
	}
	// No client retries on the check path: a retry cannot fit in the lookup timeout.
	vaultClient, auth, err := cfg.vaultClient(0, log)
	if err != nil {
		return err
	}
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	var draining atomic.Bool
	rd := &readiness{draining: &draining, format: format}
	// The preflight logs in first (and keeps the token alive from then on). A Vault that
	// does not answer either step does not stop serve: it retries both in the background
	// and stays NOT_SERVING, with the reason on /readyz, until they pass.
	loggedIn := false
	preflight := func(ctx context.Context) error {
		if !loggedIn {
			if err := auth.Start(runCtx); err != nil {
				return loginFailure(err, vaultClient.Address())
			}
			loggedIn = true
		}
		return cfg.preflight(ctx, vaultClient, cfg.AdminAddr != "")
	}
	preflightErr := preflight(ctx)
	if preflightErr != nil {
		if !errors.Is(preflightErr, vaultstore.ErrVaultUnavailable) {
			return preflightErr // misconfigured: refuse to start, with the fix
		}
		log.Warn("vault preflight failed; not ready until Vault answers", slog.String("error", preflightErr.Error()))
		rd.setVault(preflightErr)
	}
	store, err := cfg.store(vaultClient, log)
	if err != nil {
		return err
	}
	auditLog, auditFile, err := openAudit(cfg.AuditLog, stdout, format, cfg.AuditRecent)
	if err != nil {
		return err
	}
	if auditFile != nil {
		defer auditFile.Close()
	}
	cache, err := cfg.cache(store, func(source string, failures int) {
		// Once per source and spray window: the source is an address or a certificate
		// fingerprint, never a key.
		log.Warn("client suspected of spraying keys; its uncached keys are refused for the spray window",
			slog.String("source", source), slog.Int("unknown_keys", failures))
		auditLog.Write(audit.Event{Event: audit.SpraySuspected, Source: source, Status: http.StatusTooManyRequests,
			Details: map[string]any{"unknown_keys": failures, "window": time.Duration(cfg.Cache.SprayWindow).String()}})
	})
	if err != nil {
		return err
	}
	rd.cache = cache
	clientCerts, err := cfg.clientCertReloader(func() { log.Info("reloaded", slog.String("what", "client_certs")) })
	if err != nil {
		return err
	}
	engine, err := authz.New(authz.Config{Format: format, Lookup: cache, Profile: p, Realm: cfg.Realm, Policy: cfg.Policy,
		RequireClientCert: cfg.ClientCerts.Require, IdentityRules: cfg.ClientCerts.IdentityRules})
	if err != nil {
		return err
	}
	limiter, failOpen, limiterConn, err := cfg.limiter()
	if err != nil {
		return err
	}
	if limiterConn != nil {
		defer limiterConn.Close()
	}
	usage := store.NewUsage()

	reloaders, err := cfg.listenerReloaders(log)
	if err != nil {
		return err
	}
	lv.tls = maps.Clone(reloaders)
	if clientCerts != nil {
		lv.tls["client_certs"] = clientCerts
	}
	if err := registerTLSMetrics(lv.tls); err != nil {
		return err
	}
	if err := registerReloadMetrics(lv); err != nil {
		return err
	}
	// Checks run on a pool of stream workers that keep their grown stacks: a new
	// goroutine per Check grows its stack on every call (about 15% of the CPU under
	// load, BENCHMARKS.md). A check finding every worker busy gets its own goroutine;
	// idle workers have their stacks shrunk by each GC, so the pool is not made larger
	// than the checks usually in flight.
	grpcOpts := append(limits.grpcOptions(), grpc.NumStreamWorkers(uint32(32*runtime.GOMAXPROCS(0))),
		envoy.Codec()) // allowed answers encoded from their prebuilt parts
	if tel.tracing {
		// A span per Check, continuing Envoy's trace. Only when traces are exported: the
		// instrumentation costs about 10% of throughput (BENCHMARKS.md), and keygate's own
		// metrics already count and time every check, so otelgrpc's are off.
		grpcOpts = append(grpcOpts, grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithMeterProvider(noopmetric.NewMeterProvider()))))
	}
	if r := reloaders["grpc"]; r != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(r.TLSConfig("h2"))))
	}
	g := grpc.NewServer(grpcOpts...)
	opts := envoy.Options{KeepCredentials: cfg.KeepCredentials, Logger: log, Audit: auditLog, Usage: usage,
		LimiterFailOpen: failOpen, PerKeyMetrics: cfg.Metrics.PerKey, TrustForwardedFrom: cfg.ClientCerts.TrustForwardedFrom}
	switch {
	case clientCerts != nil:
		// A reloaded CA bundle or CRL is a new Verifier: the server's cache of verified
		// certificates, keyed by it, starts over.
		opts.ClientCerts = clientCerts.Verifier
	case reloaders["terminate"] != nil:
		// Without client_certs, the terminator's own CA bundle and CRL verify.
		opts.ClientCerts = reloaders["terminate"].Verifier
	}
	if limiter != nil {
		opts.Limits = limiter // an untyped nil, not a nil *Limiter, when there is none
	}
	counts, usageStore, stopUsage, err := cfg.Usage.start(runCtx, log)
	if err != nil {
		return err
	}
	defer stopUsage() // after the servers stop: the last flush sees every check
	var usageReader admin.UsageReader
	if counts != nil {
		opts.Counter = counts // an untyped nil when off
	}
	if usageStore != nil {
		usageReader = usageStore // an untyped nil without a store (off, or an export alone)
	}
	authzServer, err := envoy.NewServer(engine, opts)
	if err != nil {
		return err
	}
	authzServer.Register(g)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	var background sync.WaitGroup
	if preflightErr != nil {
		background.Go(func() {
			rd.retryPreflight(runCtx, preflight, max(time.Duration(cfg.Cache.PollInterval), time.Second), log)
		})
	}
	background.Go(func() { cache.Run(runCtx) })
	background.Go(func() { usage.Run(runCtx, time.Duration(cfg.UsageFlush)) })
	background.Go(func() { watchReadiness(runCtx, rd, hs, time.Duration(cfg.Cache.PollInterval), log) })
	background.Go(func() { lv.run(runCtx, time.Duration(cfg.TLS.ReloadInterval)) })

	tcp, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	glis := newCapListener(tcp, "grpc", limits.MaxGRPC, false)
	capped := []*capListener{glis}
	errc := make(chan error, 4)
	go func() { errc <- g.Serve(glis) }()

	var httpServers []*http.Server
	var term http.Handler
	if cfg.Terminate.Addr != "" {
		up, err := url.Parse(cfg.Terminate.Upstream)
		if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
			return fmt.Errorf("terminate.upstream %q: want an http:// or https:// URL", cfg.Terminate.Upstream)
		}
		term = terminator.New(terminator.Config{Upstream: up, Checker: authzServer, MaxBody: cfg.Terminate.MaxBody, Profile: p, Logger: log})
	}
	for _, l := range []struct {
		name, metric, addr string
		handler            http.Handler
		tls                *certs.Reloader
	}{
		{"mTLS terminator", "terminate", cfg.Terminate.Addr, term, reloaders["terminate"]},
		{"health", "http", cfg.HTTPAddr, healthMux(rd, cache, tel.metrics), reloaders["http"]},
		{"admin API", "admin", cfg.AdminAddr, adminHandler(engine, store, format, auditLog, usage, usageReader, cfg, reloaders["admin"]), reloaders["admin"]},
	} {
		if l.addr == "" {
			continue
		}
		tcp, err := net.Listen("tcp", l.addr)
		if err != nil {
			g.Stop()
			return fmt.Errorf("%s listener: %w", l.name, err)
		}
		// The cap counts TCP connections, under TLS: a connection still in its handshake
		// is idle and may be evicted.
		cl := newCapListener(tcp, l.metric, limits.MaxHTTP, true)
		capped = append(capped, cl)
		var lis net.Listener = cl
		if l.tls != nil {
			lis = tls.NewListener(lis, l.tls.TLSConfig("h2", "http/1.1"))
		}
		srv := limits.httpServer(l.handler, l.metric == "terminate", log)
		httpServers = append(httpServers, srv)
		go func() { errc <- srv.Serve(lis) }()
		log.Info("serving "+l.name, slog.String("addr", lis.Addr().String()))
	}
	if err := registerConnMetrics(capped); err != nil {
		g.Stop()
		return err
	}
	limits.fdBudget(len(capped)-1, log)
	log.Info("serving ext_authz", slog.String("addr", glis.Addr().String()),
		slog.String("deny_profile", p.String()), slog.String("key_prefix", format.Prefix()),
		slog.String("vault_path", cfg.Vault.Mount+"/"+cfg.Vault.Path), slog.String("version", version))

	select {
	case <-ctx.Done():
	case err := <-errc:
		g.Stop()
		return fmt.Errorf("server stopped: %w", err)
	}

	log.Info("shutting down", slog.String("grace", time.Duration(cfg.ShutdownGrace).String()))
	draining.Store(true)
	hs.Shutdown() // every service NOT_SERVING, so Envoy's health checks move away first
	if d := time.Duration(cfg.ShutdownDelay); d > 0 {
		// Keep deciding while health checkers notice, before connections are closed.
		time.Sleep(d)
	}
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	grace := time.NewTimer(time.Duration(cfg.ShutdownGrace))
	defer grace.Stop()
	select {
	case <-stopped:
	case <-grace.C:
		log.Warn("shutdown grace over; closing remaining connections")
		g.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, srv := range httpServers {
		_ = srv.Shutdown(sctx)
	}
	stopRun()
	background.Wait() // includes the last usage flush
	log.Info("stopped")
	return nil
}

// adminHandler serves the admin listener: the admin API, and the operator console at
// /console/ whose sessions the API accepts in place of the key header.
func adminHandler(engine *authz.Engine, store *vaultstore.Store, format authz.Format, auditLog *audit.Log,
	usage *vaultstore.Usage, usageReader admin.UsageReader, cfg config, tls *certs.Reloader) http.Handler {
	con := console.New(console.Config{Engine: engine, Store: store, Audit: auditLog, PeerOf: peerOf(tls), Usage: usage})
	h := con.Handler(admin.New(admin.Config{Engine: engine, Store: store, Format: format, Audit: auditLog, Usage: usage,
		DefaultGrace: time.Duration(cfg.RotationGrace), PeerOf: peerOf(tls), UsageStats: usageReader, Session: con.Resolve}))
	if tls == nil && loopbackAddr(cfg.AdminAddr) {
		h = console.LoopbackHosts(h) // no DNS rebinding onto a loopback listener
	}
	return h
}

// loopbackAddr reports whether a listen address binds only a loopback interface.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && host != "" && console.LoopbackHost(host)
}

// expvarHandler serves memstats and keygate's own variables as JSON. expvar's global
// registry is not used, so a process may run serve more than once (tests do).
func expvarHandler(vars *expvar.Map) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mem, _ := json.Marshal(ms)
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprintf(w, "{\"memstats\": %s, \"keygate\": %s}\n", mem, vars.String())
	})
}

// listenerReloaders loads the TLS files of each listener that has them.
func (cfg *config) listenerReloaders(log *slog.Logger) (map[string]*certs.Reloader, error) {
	reloader := func(name string, l *listenerTLS) (*certs.Reloader, error) {
		return certs.NewReloader(certs.ReloaderConfig{CertFile: l.CertFile, KeyFile: l.KeyFile, ClientCAFile: l.ClientCAFile,
			CRLFile: l.CRLFile, Profile: l.Profile, RequireClientCert: l.RequireClientCert,
			OnReload: func() { log.Info("reloaded", slog.String("what", "tls "+name)) }})
	}
	out := map[string]*certs.Reloader{}
	if cfg.Terminate.Addr != "" {
		t := cfg.Terminate.TLS
		if t == nil || t.ClientCAFile == "" {
			return nil, errors.New("terminate: the terminator needs terminate.tls with a client_ca_file: it always requires client certificates")
		}
		t.RequireClientCert = true
		r, err := reloader("terminate", t)
		if err != nil {
			return nil, fmt.Errorf("terminate.tls: %w", err)
		}
		out["terminate"] = r
	}
	for name, l := range map[string]struct {
		tls  *listenerTLS
		addr string
	}{"grpc": {cfg.TLS.GRPC, cfg.GRPCAddr}, "http": {cfg.TLS.HTTP, cfg.HTTPAddr}, "admin": {cfg.TLS.Admin, cfg.AdminAddr}} {
		if l.tls == nil || l.addr == "" {
			continue
		}
		r, err := reloader(name, l.tls)
		if err != nil {
			return nil, fmt.Errorf("tls.%s: %w", name, err)
		}
		out[name] = r
	}
	return out, nil
}

// peerOf returns how the admin API learns a caller's verified client certificate: from
// the connection's TLS state, checked again with the listener's current CA and CRL.
func peerOf(r *certs.Reloader) func(*http.Request) authz.Peer {
	if r == nil {
		return nil
	}
	return admin.PeerFrom(r.Verifier)
}

// readiness is what /readyz and the gRPC health service report: keygate can decide when
// it is not shutting down, the Vault preflight passed, and Vault answered within the
// cache's stale window.
type readiness struct {
	draining *atomic.Bool
	cache    *vaultstore.Cache
	format   authz.Format           // what a reason is redacted with
	vault    atomic.Pointer[string] // why the Vault preflight failed; nil once it passed
}

func (r *readiness) ready() bool {
	return !r.draining.Load() && r.vault.Load() == nil && r.cache.Ready()
}

// why says why keygate is not ready.
func (r *readiness) why() string {
	if r.draining.Load() {
		return "shutting down"
	}
	if v := r.vault.Load(); v != nil {
		return *v
	}
	return "Vault unreachable for longer than the stale window"
}

// setVault records the preflight's failure (nil: it passed) as /readyz shows it.
func (r *readiness) setVault(err error) {
	if err == nil {
		r.vault.Store(nil)
		return
	}
	why := publicReason(err.Error(), r.format)
	r.vault.Store(&why)
}

// loginFailure returns a failed Vault login as an ErrVaultUnavailable when Vault did not
// answer (no connection, a timeout, a sealed or standby node's 5xx), so that serve waits
// for it; anything else (a rejected token, unreadable AppRole files) as it is, to refuse
// to start.
func loginFailure(err error, addr string) error {
	var re *api.ResponseError
	var op *net.OpError
	var ne net.Error
	switch {
	case errors.As(err, &re) && re.StatusCode < 500:
		return err
	case errors.As(err, &re), errors.As(err, &op), errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: cannot log in to Vault at %s: %w", vaultstore.ErrVaultUnavailable, addr, err)
	}
	return err
}

// urlUserinfo matches the user and password of a URL, such as a Vault address written
// https://user:password@vault:8200.
var urlUserinfo = regexp.MustCompile(`://[^/@\s"']*@`)

// publicReason returns msg fit for /readyz, which answers anyone who reaches the health
// listener: no URL credentials, nothing key- or token-shaped (a Vault token's body is a
// long run of letters and digits, which the key format's redaction replaces).
func publicReason(msg string, f authz.Format) string {
	return f.Redact(urlUserinfo.ReplaceAllString(msg, "://"))
}

// retryPreflight runs the Vault preflight again every interval until it passes, keeping
// its latest failure as the reason /readyz gives and logging each new one: a Vault that
// comes back misconfigured (a wrong mount, a token without the policy) keeps keygate
// NOT_SERVING with the fix, instead of ready and denying every key.
func (r *readiness) retryPreflight(ctx context.Context, preflight func(context.Context) error, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	if v := r.vault.Load(); v != nil {
		last = *v
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := preflight(ctx)
		if ctx.Err() != nil {
			return
		}
		r.setVault(err)
		if err == nil {
			log.Info("vault preflight passed")
			return
		}
		if why := *r.vault.Load(); why != last {
			log.Warn("vault preflight failed; not ready until it passes", slog.String("error", err.Error()))
			last = why
		}
	}
}

// watchReadiness mirrors readiness into the gRPC health service, so Envoy's health
// checks stop sending checks to a replica that cannot decide.
func watchReadiness(ctx context.Context, rd *readiness, hs *health.Server, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	last := healthpb.HealthCheckResponse_UNKNOWN
	for {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if rd.ready() {
			st = healthpb.HealthCheckResponse_SERVING
		}
		if st != last && !rd.draining.Load() {
			hs.SetServingStatus("", st)
			hs.SetServingStatus(authv3.Authorization_ServiceDesc.ServiceName, st)
			log.Info("health", slog.String("status", st.String()))
			last = st
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// healthMux serves /healthz (the process is up), /readyz (it can decide), /metrics
// (Prometheus) and /debug/vars (Go runtime figures: memstats, goroutines, and the cache
// counters).
func healthMux(rd *readiness, cache *vaultstore.Cache, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	vars := new(expvar.Map).Init()
	vars.Set("goroutines", expvar.Func(func() any { return runtime.NumGoroutine() }))
	vars.Set("cache", expvar.Func(func() any { return cache.Stats() }))
	mux.Handle("GET /debug/vars", expvarHandler(vars))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !rd.ready() {
			http.Error(w, "not ready: "+rd.why(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

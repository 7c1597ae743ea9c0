package vaultstore

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/vault/api"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

const scope = "github.com/keygate/keygate/vaultstore"

// telemetry is a Store's tracer and instruments, taken from the global OTel providers
// when the Store is made (so serve installs its providers first).
type telemetry struct {
	tracer   trace.Tracer
	duration metric.Float64Histogram
	errors   metric.Int64Counter
}

func newTelemetry() (telemetry, error) {
	m := otel.Meter(scope)
	t := telemetry{tracer: otel.Tracer(scope)}
	var err error
	if t.duration, err = m.Float64Histogram("keygate.vault.request.duration", metric.WithUnit("s"),
		metric.WithDescription("Vault requests by operation and kind of data."),
		metric.WithExplicitBucketBoundaries(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5)); err != nil {
		return t, err
	}
	if t.errors, err = m.Int64Counter("keygate.vault.errors",
		metric.WithDescription("Vault requests that failed (not counting not-found), by operation, kind of data and class (denied, timeout, unreachable, unavailable, other).")); err != nil {
		return t, err
	}
	// The check path's reads start at zero, so alerts see the series before any error.
	for _, kind := range []string{"records", "changes"} {
		for _, class := range errorClasses {
			t.errors.Add(context.Background(), 0, metric.WithAttributes(attribute.String("operation", "read"),
				attribute.String("kind", kind), attribute.String("class", class)))
		}
	}
	return t, nil
}

// Classes of failed Vault requests, for logs and the keygate_vault_errors_total metric.
const (
	ClassDenied      = "denied"      // 401 or 403: the token is invalid or its policy does not reach the path
	ClassTimeout     = "timeout"     // the request's deadline passed (lookup_timeout, Envoy's timeout)
	ClassUnreachable = "unreachable" // no connection: refused, reset, DNS
	ClassUnavailable = "unavailable" // Vault answered 5xx: sealed, no leader, overloaded
	ClassOther       = "other"       // anything else, such as an undecodable answer
)

var errorClasses = []string{ClassDenied, ClassTimeout, ClassUnreachable, ClassUnavailable, ClassOther}

// ErrorClass says why a Vault request failed: one of the Class constants.
func ErrorClass(err error) string {
	var re *api.ResponseError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &re) && (re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden):
		return ClassDenied
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	case errors.As(err, &re) && re.StatusCode >= 500:
		return ClassUnavailable
	case errors.As(err, &oe), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return ClassUnreachable
	}
	return ClassOther
}

// failureLog logs failed Vault requests at most once per class every failureLogEvery,
// with how many of that class went unlogged meanwhile: a Vault outage on the check
// path must be visible, not a line per check.
type failureLog struct {
	log   *slog.Logger
	last  [5]atomic.Int64 // unix nanoseconds of the last line, per class
	quiet [5]atomic.Int64 // failures not logged since
}

const failureLogEvery = 10 * time.Second

func (f *failureLog) note(ctx context.Context, op, kind, class string, status int) {
	if f.log == nil {
		return
	}
	i := slices.Index(errorClasses, class)
	now := time.Now().UnixNano()
	last := f.last[i].Load()
	if now-last < int64(failureLogEvery) || !f.last[i].CompareAndSwap(last, now) {
		f.quiet[i].Add(1)
		return
	}
	// Neither the error's text nor the path: a record's path holds its key's hash.
	f.log.LogAttrs(ctx, slog.LevelWarn, "vault request failed", slog.String("operation", op),
		slog.String("kind", kind), slog.String("class", class), slog.Int("status", status),
		slog.Int64("unlogged_since_last", f.quiet[i].Swap(0)), slog.String("hint", classHint[class]))
}

// classHint is what to look at for each class.
var classHint = map[string]string{
	ClassDenied:      "the token was rejected or its policy does not reach keygate's path: check VAULT_TOKEN / vault.auth and vaultstore/policies",
	ClassTimeout:     "Vault answered too slowly: check its load and vault.lookup_timeout",
	ClassUnreachable: "no connection to Vault: check VAULT_ADDR / vault.address(es) and the network",
	ClassUnavailable: "Vault answered 5xx: sealed, no active node, or overloaded",
	ClassOther:       "an unexpected answer from Vault",
}

// observe starts a span for one Vault request and returns the function that ends it,
// recording its duration and, unless it is a not-found, its error. kind is the first
// path segment under the base ("records", "ids", "changes", …): never a key's hash.
func (s *Store) observe(ctx context.Context, op, path string) (context.Context, func(error)) {
	kind := s.kind(path)
	attrs := attribute.NewSet(attribute.String("operation", op), attribute.String("kind", kind))
	ctx, span := s.tel.tracer.Start(ctx, "vault."+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("vault.operation", op), attribute.String("vault.kind", kind)))
	start := time.Now()
	return ctx, func(err error) {
		s.tel.duration.Record(ctx, time.Since(start).Seconds(), metric.WithAttributeSet(attrs))
		if err != nil && !errors.Is(err, ErrKeyNotFound) && !errors.Is(err, context.Canceled) {
			class := ErrorClass(err)
			s.tel.errors.Add(ctx, 1, metric.WithAttributes(attribute.String("operation", op), attribute.String("kind", kind),
				attribute.String("class", class)))
			status := 0
			var re *api.ResponseError
			if errors.As(err, &re) {
				status = re.StatusCode
			}
			s.failures.note(ctx, op, kind, class, status)
			span.SetStatus(codes.Error, "vault request failed: "+class)
		}
		span.End()
	}
}

// kind is the first path segment under the base: "records", "ids", "changes", …
func (s *Store) kind(path string) string {
	kind := strings.TrimPrefix(path, s.base+"/")
	if i := strings.IndexByte(kind, '/'); i >= 0 {
		kind = kind[:i]
	}
	return kind
}

// registerCacheMetrics exports the cache's counters as observable counters.
func registerCacheMetrics(c *Cache) error {
	m := otel.Meter(scope)
	names := []struct {
		name, desc string
		value      func(CacheStats) uint64
	}{
		{"keygate.cache.hits", "Records served from the cache.", func(s CacheStats) uint64 { return s.Hits }},
		{"keygate.cache.negative_hits", "Unknown keys answered from the cache.", func(s CacheStats) uint64 { return s.NegativeHits }},
		{"keygate.cache.misses", "Lookups that went to Vault (or would have, but for the miss budget).", func(s CacheStats) uint64 { return s.Misses }},
		{"keygate.cache.evictions", "Records dropped to make room.", func(s CacheStats) uint64 { return s.Evictions }},
		{"keygate.cache.stale_serves", "Records served past their TTL because Vault was unavailable.", func(s CacheStats) uint64 { return s.StaleServes }},
		{"keygate.cache.throttled", "Uncached keys denied without a Vault read (miss budget spent).", func(s CacheStats) uint64 { return s.Throttled }},
		{"keygate.cache.invalidations", "Change-feed polls that evicted records.", func(s CacheStats) uint64 { return s.Invalidations }},
		{"keygate.cache.source_throttled", "Uncached keys denied without a Vault read because their client's share of the miss budget was spent.", func(s CacheStats) uint64 { return s.SourceThrottled }},
		{"keygate.cache.source_refused", "Uncached keys refused early (429) from clients suspected of spraying keys.", func(s CacheStats) uint64 { return s.SourceRefused }},
		{"keygate.cache.spray_suspected", "Times a client was marked as spraying keys (auth.spray_suspected).", func(s CacheStats) uint64 { return s.SpraySuspected }},
	}
	insts := make([]metric.Int64ObservableCounter, len(names))
	obs := make([]metric.Observable, len(names))
	for i, n := range names {
		inst, err := m.Int64ObservableCounter(n.name, metric.WithDescription(n.desc))
		if err != nil {
			return err
		}
		insts[i], obs[i] = inst, inst
	}
	_, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := c.Stats()
		for i, n := range names {
			o.ObserveInt64(insts[i], int64(n.value(st)))
		}
		return nil
	}, obs...)
	return err
}

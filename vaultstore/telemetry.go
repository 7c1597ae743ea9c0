package vaultstore

import (
	"context"
	"errors"
	"strings"
	"time"

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
		metric.WithDescription("Vault requests that failed (not counting not-found), by operation and kind of data.")); err != nil {
		return t, err
	}
	// The check path's reads start at zero, so alerts see the series before any error.
	for _, kind := range []string{"records", "changes"} {
		t.errors.Add(context.Background(), 0, metric.WithAttributes(attribute.String("operation", "read"), attribute.String("kind", kind)))
	}
	return t, nil
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
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			s.tel.errors.Add(ctx, 1, metric.WithAttributeSet(attrs))
			span.SetStatus(codes.Error, "vault request failed")
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

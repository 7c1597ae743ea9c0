package envoy

import (
	"context"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/keygate/keygate/authz"
)

// meterName names the instrumentation scope of the adapter's metrics.
const meterName = "github.com/keygate/keygate/envoy"

// metrics are the adapter's instruments, from the global MeterProvider. Attribute sets
// are made once per reason, so recording a check allocates nothing.
type metrics struct {
	// checks counts checks per reason (indexed by authz.Reason) in atomic counters,
	// reported to the observable counter keygate.checks when metrics are collected:
	// a check costs one atomic add, not a measurement through the SDK. A reason is
	// reported once it has a check, as a synchronous counter's series appears with its
	// first measurement. Several Servers under one MeterProvider each report theirs, and
	// the SDK adds them up (an observable counter's observations of one attribute set
	// within one collection are summed).
	checks      []atomic.Int64
	duration    metric.Float64Histogram
	rateLimited metric.Int64Counter
	limiterDown metric.Int64Counter
	perKey      metric.Int64Counter // nil unless per-key counts are on
	// Per reason (indexed by authz.Reason), the options slices passed to Add and Record:
	// made once, so recording allocates nothing.
	observeByReason []metric.ObserveOption
	recordByReason  [][]metric.RecordOption
	failOpen        metric.MeasurementOption
	failClosed      metric.MeasurementOption
}

func newMetrics(perKey bool) (*metrics, error) { return newMetricsOf(otel.Meter(meterName), perKey) }

// newMetricsOf makes the instruments on m. The observable counter's callback stays
// registered with m's provider, and reports every check since the Server was made:
// under the global MeterProvider before otel.SetMeterProvider (serve sets it first),
// checks made before it was set are reported too.
func newMetricsOf(m metric.Meter, perKey bool) (*metrics, error) {
	var out metrics
	var err error
	checks, err := m.Int64ObservableCounter("keygate.checks",
		metric.WithDescription("Authorization checks by decision and reason."))
	if err != nil {
		return nil, err
	}
	if out.duration, err = m.Float64Histogram("keygate.check.duration", metric.WithUnit("s"),
		metric.WithDescription("Time to decide one check, Vault and rate limiter included."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5)); err != nil {
		return nil, err
	}
	if out.rateLimited, err = m.Int64Counter("keygate.ratelimit.rejections",
		metric.WithDescription("Requests refused with a 429.")); err != nil {
		return nil, err
	}
	if out.limiterDown, err = m.Int64Counter("keygate.ratelimit.failures",
		metric.WithDescription("Checks the rate limiter could not answer, by outcome (allowed: fail open; denied: fail closed).")); err != nil {
		return nil, err
	}
	if perKey {
		if out.perKey, err = m.Int64Counter("keygate.key.checks",
			metric.WithDescription("Checks per key id and decision (opt-in: one series per key).")); err != nil {
			return nil, err
		}
	}
	for _, r := range authz.Reasons() {
		set := metric.WithAttributeSet(attribute.NewSet(
			attribute.String("decision", decisionOf(r)), attribute.String("reason", r.String())))
		out.observeByReason = append(out.observeByReason, set)
		out.recordByReason = append(out.recordByReason, []metric.RecordOption{set})
	}
	out.checks = make([]atomic.Int64, len(out.observeByReason))
	if _, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for r := range out.checks {
			if n := out.checks[r].Load(); n > 0 {
				o.ObserveInt64(checks, n, out.observeByReason[r])
			}
		}
		return nil
	}, checks); err != nil {
		return nil, err
	}
	out.failOpen = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "allowed")))
	out.failClosed = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "denied")))
	// Counters of rare events start at zero, so that rate() and alerts see them from
	// the first scrape rather than from the first event.
	ctx := context.Background()
	out.rateLimited.Add(ctx, 0)
	out.limiterDown.Add(ctx, 0, out.failOpen)
	out.limiterDown.Add(ctx, 0, out.failClosed)
	return &out, nil
}

// record counts one decided check.
func (m *metrics) record(ctx context.Context, d *authz.Decision, start time.Time) {
	m.checks[d.Reason].Add(1)
	m.duration.Record(ctx, time.Since(start).Seconds(), m.recordByReason[d.Reason]...)
	if m.perKey != nil && d.Record.ID != "" {
		m.perKey.Add(ctx, 1, metric.WithAttributes(attribute.String("key_id", d.Record.ID),
			attribute.String("decision", decisionOf(d.Reason))))
	}
}

func decisionOf(r authz.Reason) string {
	if r == authz.ReasonAllowed {
		return "allow"
	}
	return "deny"
}

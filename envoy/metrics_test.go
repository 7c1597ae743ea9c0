package envoy

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/keygate/keygate/authz"
)

// checksCounted collects keygate.checks: the count per reason. Each series has the
// reason and its decision, and no other label.
func checksCounted(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "keygate.checks" {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
				t.Fatalf("keygate.checks is %T %+v, want a cumulative monotonic sum", m.Data, m.Data)
			}
			for _, dp := range sum.DataPoints {
				reason, _ := dp.Attributes.Value(attribute.Key("reason"))
				decision, _ := dp.Attributes.Value(attribute.Key("decision"))
				if dp.Attributes.Len() != 2 || (decision.AsString() == "allow") != (reason.AsString() == authz.ReasonAllowed.String()) {
					t.Fatalf("series %v", dp.Attributes.ToSlice())
				}
				out[reason.AsString()] = dp.Value
			}
		}
	}
	return out
}

// Every check is counted once, by reason, across the Servers of one meter provider; a
// reason gets a series with its first check, and the counts are cumulative.
func TestChecksCounted(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter(meterName)
	m1, err := newMetricsOf(meter, false)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := newMetricsOf(meter, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(m *metrics, r authz.Reason) { m.record(ctx, &authz.Decision{Reason: r}, time.Now()) }
	if got := checksCounted(t, reader); len(got) != 0 {
		t.Fatalf("before any check: %v", got)
	}
	check(m1, authz.ReasonMissing)
	check(m2, authz.ReasonMissing)
	check(m2, authz.ReasonAllowed)
	got := checksCounted(t, reader)
	want := map[string]int64{authz.ReasonMissing.String(): 2, authz.ReasonAllowed.String(): 1}
	if !maps.Equal(got, want) {
		t.Fatalf("counted %v, want %v", got, want)
	}
	check(m1, authz.ReasonMissing)
	want[authz.ReasonMissing.String()] = 3
	if got := checksCounted(t, reader); !maps.Equal(got, want) {
		t.Fatalf("then counted %v, want %v", got, want)
	}
}

// countLog is a Counter that keeps the reasons it is told of.
type countLog struct{ reasons []authz.Reason }

func (c *countLog) Count(d *authz.Decision, _ time.Time) { c.reasons = append(c.reasons, d.Reason) }

// Every check is told to the Counter once, with its decision.
func TestCounterToldEveryCheck(t *testing.T) {
	c := &countLog{}
	s := newServer(t, newEngine(t, staticLookup{}, authz.ProfileMagicx), Options{Counter: c})
	for _, authorization := range []string{"", "Basic abc"} {
		req := envoyShaped(t)
		delete(req.Attributes.Request.Http.Headers, "authorization")
		if authorization != "" {
			req.Attributes.Request.Http.Headers["authorization"] = authorization
		}
		if _, err := s.Check(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if want := []authz.Reason{authz.ReasonMissing, authz.ReasonMalformed}; !slices.Equal(c.reasons, want) {
		t.Fatalf("counted %v, want %v", c.reasons, want)
	}
}

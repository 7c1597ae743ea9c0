package usage_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/usage"
)

// receiver is an OTLP/gRPC metrics receiver (the collector's service) on loopback. It
// keeps the keygate.usage.checks points of the requests it accepts; told to, it refuses
// requests (Unavailable, before keeping anything), keeps a request but answers an error
// (the answer lost), or rejects points in a partial success.
type receiver struct {
	colmetricpb.UnimplementedMetricsServiceServer
	addr string

	mu         sync.Mutex
	refuse     map[int]bool // by call number (1-based): refuse before keeping
	loseAnswer map[int]bool // by call number: keep, then answer Unavailable
	reject     int64        // rejected points reported in each accepted answer
	calls      int
	points     []point
	resources  []map[string]string
}

type point struct {
	attrs       map[string]string
	start, end  time.Time
	value       int64
	temporality metricpb.AggregationTemporality
	monotonic   bool
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{addr: l.Addr().String(), refuse: map[int]bool{}, loseAnswer: map[int]bool{}}
	srv := grpc.NewServer()
	colmetricpb.RegisterMetricsServiceServer(srv, r)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return r
}

func (r *receiver) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.refuse[r.calls] {
		return nil, status.Error(codes.Unavailable, "receiver down")
	}
	for _, rm := range req.ResourceMetrics {
		res := map[string]string{}
		for _, kv := range rm.GetResource().GetAttributes() {
			res[kv.Key] = kv.GetValue().GetStringValue()
		}
		r.resources = append(r.resources, res)
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != usage.ChecksMetric {
					continue
				}
				for _, dp := range m.GetSum().GetDataPoints() {
					p := point{attrs: map[string]string{}, start: time.Unix(0, int64(dp.StartTimeUnixNano)),
						end: time.Unix(0, int64(dp.TimeUnixNano)), value: dp.GetAsInt(),
						temporality: m.GetSum().AggregationTemporality, monotonic: m.GetSum().IsMonotonic}
					for _, kv := range dp.Attributes {
						p.attrs[kv.Key] = kv.GetValue().GetStringValue()
					}
					r.points = append(r.points, p)
				}
			}
		}
	}
	if r.loseAnswer[r.calls] {
		return nil, status.Error(codes.Unavailable, "answer lost")
	}
	resp := &colmetricpb.ExportMetricsServiceResponse{}
	if r.reject > 0 {
		resp.PartialSuccess = &colmetricpb.ExportMetricsPartialSuccess{RejectedDataPoints: r.reject, ErrorMessage: "over quota"}
	}
	return resp, nil
}

// sums returns the received counts by "minute key owner route model outcome", the
// minute being the one each point's interval lies in, and checks each point's shape.
func (r *receiver) sums(t *testing.T) map[string]int64 {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for _, p := range r.points {
		minute := p.start.UTC().Truncate(time.Minute)
		if !p.start.Before(p.end) || p.end.After(minute.Add(time.Minute)) {
			t.Errorf("point interval %s to %s is not within one minute", p.start, p.end)
		}
		if p.temporality != metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA || !p.monotonic {
			t.Errorf("point is %v, monotonic %v: want a monotonic delta sum", p.temporality, p.monotonic)
		}
		if len(p.attrs) != 5 {
			t.Errorf("point attributes %v: want key_id, owner, route, model and outcome", p.attrs)
		}
		out[fmt.Sprintf("%s %s %s %s %s %s", minute.Format("15:04"), p.attrs["key_id"], p.attrs["owner"],
			p.attrs["route"], p.attrs["model"], p.attrs["outcome"])] += p.value
	}
	return out
}

func (r *receiver) set(f func(*receiver)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func exporter(t *testing.T, r *receiver, replica string) *usage.Exporter {
	t.Helper()
	res := resource.NewSchemaless(attribute.String("service.name", "keygate"), attribute.String("service.instance.id", replica))
	e, err := usage.NewOTLPExporter(context.Background(), res, nil, otlpmetricgrpc.WithEndpoint(r.addr), otlpmetricgrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

func equalCounts(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d series, want %d:\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %q = %d, want %d", what, k, got[k], n)
		}
	}
}

// TestExportCounts counts checks through an Aggregator with a SQLite store and the
// OTLP export to a real receiver, and finds the same counts per key, minute, route,
// model and outcome in both.
func TestExportCounts(t *testing.T) {
	ctx := context.Background()
	r := newReceiver(t)
	s := sqlite(t)
	a, err := usage.NewAggregator(s, usage.Options{ReplicaID: "r1", Export: exporter(t, r, "r1")})
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(30 * time.Second)
	keyB := authz.Record{ID: "key_b", Owner: "bravo"}
	for range 3 {
		a.Count(decision(keyA, chat, "gpt-4o", authz.ReasonAllowed), at)
	}
	a.Count(decision(keyA, chat, "o1", authz.ReasonModelNotAllowed), at)
	a.Count(decision(keyA, images, "", authz.ReasonAllowed), at.Add(time.Minute))
	a.Count(decision(keyB, images, "", authz.ReasonRateLimited), at.Add(time.Minute))
	a.Count(decision(authz.Record{}, chat, "", authz.ReasonUnknownKey), at)
	a.Count(decision(authz.Record{}, nil, "", authz.ReasonMissing), at)
	a.Count(decision(keyB, chat, "bad\xff\xfemodel", authz.ReasonAllowed), at) // not UTF-8: sent with U+FFFD
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		a.Count(decision(keyA, chat, "gpt-4o", authz.ReasonAllowed), at)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{
		"10:00 key_a acme chat gpt-4o allowed":          5,
		"10:00 key_a acme chat o1 model_not_allowed":    1,
		"10:01 key_a acme images  allowed":              1,
		"10:01 key_b bravo images  rate_limited":        1,
		"10:00   chat  unknown_key":                     1,
		"10:00     missing_key":                         1,
		"10:00 key_b bravo chat bad\uFFFDmodel allowed": 1,
	}
	equalCounts(t, "received", r.sums(t), want)
	if len(r.resources) != 2 || r.resources[0]["service.instance.id"] != "r1" {
		t.Errorf("resources %v: want two requests from service.instance.id r1", r.resources)
	}
	// The store holds the same counts.
	equal(t, "stored", query(t, s, usage.Query{All: true, From: t0, To: t0.Add(time.Hour), Step: usage.StepMinute,
		By: usage.DimOutcome}), map[string]int64{"10:00 allowed": 6, "10:00 model_not_allowed": 1, "10:00 unknown_key": 1,
		"10:00 missing_key": 1, "10:01 allowed": 1, "10:01 rate_limited": 1})
}

// TestExportWindow checks the points' intervals: each cell's minute cut to the window,
// the whole minute for a check counted after the window that covered its minute.
func TestExportWindow(t *testing.T) {
	m := t0.Unix()
	b := usage.Batch{ID: "r-1", Start: t0.Add(40 * time.Second), End: t0.Add(100 * time.Second), Counts: map[usage.Cell]int64{
		{Minute: m, KeyID: "a", Outcome: "allowed"}:       2,
		{Minute: m + 60, KeyID: "b", Outcome: "allowed"}:  3,
		{Minute: m - 60, KeyID: "c", Outcome: "allowed"}:  1, // a straggler
		{Minute: m + 120, KeyID: "d", Outcome: "allowed"}: 1, // counted after the window's end (clock)
	}}
	want := map[string][2]time.Duration{"a": {40 * time.Second, 60 * time.Second}, "b": {60 * time.Second, 100 * time.Second},
		"c": {-60 * time.Second, 0}, "d": {120 * time.Second, 180 * time.Second}}
	pts := usage.Points(b)
	if len(pts) != 4 {
		t.Fatalf("%d points, want 4", len(pts))
	}
	for _, p := range pts {
		k, _ := p.Attributes.Value("key_id")
		w := want[k.AsString()]
		if got := [2]time.Duration{p.StartTime.Sub(t0), p.Time.Sub(t0)}; got != w {
			t.Errorf("key %s: interval %v from t0, want %v", k.AsString(), got, w)
		}
	}
}

// TestExportRetries fails the receiver, then lets it recover: nothing is lost, nothing
// sent twice, and the store's retries never send the export twice (and the other way).
func TestExportRetries(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(mp)
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	r := newReceiver(t)
	r.set(func(r *receiver) { r.refuse[1], r.refuse[2] = true, true })
	s := sqlite(t)
	w := &flaky{Writer: s, failBefore: 0}
	a, err := usage.NewAggregator(w, usage.Options{ReplicaID: "r1", Export: exporter(t, r, "r1")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for i := range 4 {
		if i == 2 {
			w.mu.Lock()
			w.failBefore = 1 // the store fails once while the receiver is back
			w.mu.Unlock()
		}
		a.Count(decision(keyA, chat, "m", authz.ReasonAllowed), t0.Add(time.Duration(i)*time.Minute))
		want[t0.Add(time.Duration(i)*time.Minute).Format("15:04")+" key_a acme chat m allowed"] = 1
		err := a.Flush(ctx)
		if (i < 3) != (err != nil) {
			t.Fatalf("flush %d: %v", i, err)
		}
	}
	if a.Pending() != 0 {
		t.Fatalf("%d batches pending after recovery", a.Pending())
	}
	equalCounts(t, "received", r.sums(t), want)
	if r.calls != 6 { // two refused, then batches 1-3 (a request each), then batch 4
		t.Errorf("receiver called %d times, want 6", r.calls)
	}
	equal(t, "stored", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour), Step: usage.StepMinute}),
		map[string]int64{"10:00 ": 1, "10:01 ": 1, "10:02 ": 1, "10:03 ": 1})

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range sum.DataPoints {
					o, _ := dp.Attributes.Value("outcome")
					got[m.Name+" "+o.AsString()] += dp.Value
				}
			}
		}
	}
	equalCounts(t, "metrics", got, map[string]int64{"keygate.usage.exports ok": 2, "keygate.usage.exports failed": 2,
		"keygate.usage.flushes ok": 3, "keygate.usage.flushes failed": 1, "keygate.usage.dropped ": 0,
		"keygate.usage.export.dropped ": 0, "keygate.usage.export.rejected ": 0})
}

// TestExportLargeBatch sends a batch of several requests whose second fails: the retry
// sends the rest only.
func TestExportLargeBatch(t *testing.T) {
	ctx := context.Background()
	r := newReceiver(t)
	r.set(func(r *receiver) { r.refuse[2] = true })
	a, err := usage.NewAggregator(nil, usage.Options{ReplicaID: "r1", Export: exporter(t, r, "r1")})
	if err != nil {
		t.Fatal(err)
	}
	n := 2*usage.MaxPointsPerExport + 500
	want := map[string]int64{}
	for i := range n {
		rec := authz.Record{ID: fmt.Sprintf("key_%05d", i), Owner: "acme"}
		a.Count(decision(rec, chat, "m", authz.ReasonAllowed), t0)
		a.Count(decision(rec, chat, "m", authz.ReasonAllowed), t0)
		want["10:00 "+rec.ID+" acme chat m allowed"] = 2
	}
	if err := a.Flush(ctx); err == nil {
		t.Fatal("the flush whose second request was refused succeeded")
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	equalCounts(t, "received", r.sums(t), want)
	if r.calls != 4 {
		t.Errorf("receiver called %d times, want 4 (1 accepted, 1 refused, 2 sent on retry)", r.calls)
	}
}

// TestExportAnswers covers the receiver's answers that OTLP cannot make exact: a
// partial success is not sent again (the rejected points are counted, not retried), and
// a request the receiver kept but whose answer was lost is sent again: counted twice.
func TestExportAnswers(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		set      func(*receiver)
		wantErr  bool
		wantSent int64
	}{
		"partial success": {set: func(r *receiver) { r.reject = 1 }, wantSent: 1},
		"answer lost":     {set: func(r *receiver) { r.loseAnswer[1] = true }, wantErr: true, wantSent: 2},
	} {
		t.Run(name, func(t *testing.T) {
			r := newReceiver(t)
			r.set(tc.set)
			a, err := usage.NewAggregator(nil, usage.Options{ReplicaID: "r1", Export: exporter(t, r, "r1")})
			if err != nil {
				t.Fatal(err)
			}
			a.Count(decision(keyA, chat, "m", authz.ReasonAllowed), t0)
			if err := a.Flush(ctx); (err != nil) != tc.wantErr {
				t.Fatalf("flush: %v, want an error: %v", err, tc.wantErr)
			}
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			equalCounts(t, "received", r.sums(t), map[string]int64{"10:00 key_a acme chat m allowed": tc.wantSent})
		})
	}
}

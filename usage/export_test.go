package usage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/otlptest"
	"github.com/keygate/keygate/usage"
)

func exporter(t *testing.T, r *otlptest.Receiver, replica string) *usage.Exporter {
	t.Helper()
	res := resource.NewSchemaless(attribute.String("service.name", "keygate"), attribute.String("service.instance.id", replica))
	e, err := usage.NewOTLPExporter(context.Background(), res, nil, otlpmetricgrpc.WithEndpoint(r.Addr), otlpmetricgrpc.WithInsecure())
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
	r := otlptest.Start(t, nil)
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
	equalCounts(t, "received", r.Counts(t), want)
	if res := r.Resources(); len(res) != 2 || res[0]["service.instance.id"] != "r1" {
		t.Errorf("resources %v: want two requests from service.instance.id r1", res)
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

	r := otlptest.Start(t, nil)
	r.Refuse(1, 2)
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
	equalCounts(t, "received", r.Counts(t), want)
	if r.Calls() != 6 { // two refused, then batches 1-3 (a request each), then batch 4
		t.Errorf("receiver called %d times, want 6", r.Calls())
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
	r := otlptest.Start(t, nil)
	r.Refuse(2)
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
	equalCounts(t, "received", r.Counts(t), want)
	if r.Calls() != 4 {
		t.Errorf("receiver called %d times, want 4 (1 accepted, 1 refused, 2 sent on retry)", r.Calls())
	}
}

// TestExportAnswers covers the receiver's answers that OTLP cannot make exact: a
// partial success is not sent again (the rejected points are counted, not retried), and
// a request the receiver kept but whose answer was lost is sent again: counted twice.
func TestExportAnswers(t *testing.T) {
	ctx := context.Background()
	for name, tc := range map[string]struct {
		set      func(*otlptest.Receiver)
		wantErr  bool
		wantSent int64
	}{
		"partial success": {set: func(r *otlptest.Receiver) { r.Reject(1) }, wantSent: 1},
		"answer lost":     {set: func(r *otlptest.Receiver) { r.LoseAnswer(1) }, wantErr: true, wantSent: 2},
	} {
		t.Run(name, func(t *testing.T) {
			r := otlptest.Start(t, nil)
			tc.set(r)
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
			equalCounts(t, "received", r.Counts(t), map[string]int64{"10:00 key_a acme chat m allowed": tc.wantSent})
		})
	}
}

// FuzzPoints: whatever the cell's strings (the model is the client's) and the window,
// each point's attributes marshal as OTLP (valid UTF-8), its value is the cell's count,
// and its interval is non-empty and within its minute.
func FuzzPoints(f *testing.F) {
	f.Add("key_a", "acme", "chat", "gpt-4o", "allowed", int64(1764000000), int64(30), int64(60))
	f.Add("", "", "", "bad\xff\xfe", "unknown_key", int64(-61), int64(0), int64(1))
	f.Add("k", "o", "r", "\xed\xa0\x80", "x", int64(60), int64(-120), int64(-60))
	f.Fuzz(func(t *testing.T, key, owner, route, model, outcome string, minute, startOff, endOff int64) {
		minute -= minute % 60
		if minute < 0 || minute > 1<<40 {
			return
		}
		b := usage.Batch{ID: "r-1", Start: time.Unix(minute+startOff%600, 0), End: time.Unix(minute+endOff%600, 0),
			Counts: map[usage.Cell]int64{{Minute: minute, KeyID: key, Owner: owner, Route: route, Model: model, Outcome: outcome}: 7}}
		pts := usage.Points(b)
		if len(pts) != 1 || pts[0].Value != 7 {
			t.Fatalf("points %v", pts)
		}
		p := pts[0]
		m := time.Unix(minute, 0)
		if !p.StartTime.Before(p.Time) || p.StartTime.Before(m) || p.Time.After(m.Add(time.Minute)) {
			t.Fatalf("interval %s to %s, minute %s", p.StartTime, p.Time, m)
		}
		dp := &metricpb.NumberDataPoint{Value: &metricpb.NumberDataPoint_AsInt{AsInt: p.Value}}
		for _, kv := range p.Attributes.ToSlice() {
			dp.Attributes = append(dp.Attributes, &commonpb.KeyValue{Key: string(kv.Key),
				Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: kv.Value.AsString()}}})
		}
		if _, err := proto.Marshal(dp); err != nil {
			t.Fatalf("the point does not marshal: %v", err)
		}
	})
}

// Package otlptest runs a real OTLP/gRPC metrics receiver (the collector's
// MetricsService, from go.opentelemetry.io/proto/otlp) on loopback for tests, and
// keeps the points of keygate.usage.checks it accepts. Told to, it refuses requests
// (Unavailable, keeping nothing), keeps a request but answers an error (an answer
// lost on the way), or reports rejected points (a partial success).
package otlptest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Metric is the metric the receiver keeps.
const Metric = "keygate.usage.checks"

// Point is one data point of Metric.
type Point struct {
	Attrs       map[string]string
	Start, End  time.Time
	Value       int64
	Temporality metricpb.AggregationTemporality
	Monotonic   bool
}

// Receiver is a running OTLP metrics receiver.
type Receiver struct {
	colmetricpb.UnimplementedMetricsServiceServer
	Addr string // host:port on 127.0.0.1

	mu         sync.Mutex
	refuse     map[int]bool
	loseAnswer map[int]bool
	reject     int64
	calls      int
	points     []Point
	resources  []map[string]string
}

// Start starts a receiver, serving TLS with tc when it is not nil, stopped when the
// test ends.
func Start(t testing.TB, tc *tls.Config) *Receiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Addr: l.Addr().String(), refuse: map[int]bool{}, loseAnswer: map[int]bool{}}
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	colmetricpb.RegisterMetricsServiceServer(srv, r)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return r
}

// Refuse makes the given calls (numbered from 1) fail with Unavailable, keeping nothing.
func (r *Receiver) Refuse(calls ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range calls {
		r.refuse[c] = true
	}
}

// LoseAnswer makes the given calls keep their points, then answer Unavailable.
func (r *Receiver) LoseAnswer(calls ...int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range calls {
		r.loseAnswer[c] = true
	}
}

// Reject makes every accepted answer report n rejected points.
func (r *Receiver) Reject(n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reject = n
}

// Calls returns how many Export calls came.
func (r *Receiver) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// Resources returns the resource attributes of each kept request.
func (r *Receiver) Resources() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]string(nil), r.resources...)
}

// Export is the MetricsService's method.
func (r *Receiver) Export(_ context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
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
				if m.Name != Metric {
					continue
				}
				for _, dp := range m.GetSum().GetDataPoints() {
					p := Point{Attrs: map[string]string{}, Start: time.Unix(0, int64(dp.StartTimeUnixNano)).UTC(),
						End: time.Unix(0, int64(dp.TimeUnixNano)).UTC(), Value: dp.GetAsInt(),
						Temporality: m.GetSum().AggregationTemporality, Monotonic: m.GetSum().IsMonotonic}
					for _, kv := range dp.Attributes {
						p.Attrs[kv.Key] = kv.GetValue().GetStringValue()
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

// Counts returns the kept counts by "HH:MM key_id owner route model outcome", the
// minute (UTC) being the one each point's interval lies in. It fails the test for a
// point that is not a monotonic delta sum with those five attributes, or whose
// interval is empty or spans more than its minute.
func (r *Receiver) Counts(t testing.TB) map[string]int64 {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for _, p := range r.points {
		minute := p.Start.Truncate(time.Minute)
		if !p.Start.Before(p.End) || p.End.After(minute.Add(time.Minute)) {
			t.Errorf("point interval %s to %s is not within one minute", p.Start, p.End)
		}
		if p.Temporality != metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA || !p.Monotonic {
			t.Errorf("point is %v, monotonic %v: want a monotonic delta sum", p.Temporality, p.Monotonic)
		}
		if len(p.Attrs) != 5 {
			t.Errorf("point attributes %v: want key_id, owner, route, model and outcome", p.Attrs)
		}
		out[fmt.Sprintf("%s %s %s %s %s %s", minute.Format("15:04"), p.Attrs["key_id"], p.Attrs["owner"],
			p.Attrs["route"], p.Attrs["model"], p.Attrs["outcome"])] += p.Value
	}
	return out
}

// Total returns the sum of every kept point.
func (r *Receiver) Total() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	for _, p := range r.points {
		n += p.Value
	}
	return n
}

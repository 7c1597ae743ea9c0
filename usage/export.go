package usage

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ChecksMetric is the name of the exported metric: a monotonic sum of checks, delta
// temporality, with the attributes key_id, owner, route, model and outcome.
const ChecksMetric = "keygate.usage.checks"

// ExportScope is the instrumentation scope of the exported metric.
const ExportScope = "github.com/keygate/keygate/usage"

// MaxPointsPerExport bounds the data points of one OTLP request (well under a
// receiver's default 4 MiB message limit at 256-byte models).
const MaxPointsPerExport = 2000

// Exporter sends batches as OTLP metrics: one data point of ChecksMetric per cell, whose
// interval is the part of the cell's minute inside the batch's window. It is a Writer
// for an Aggregator's Options.Export. A batch larger than MaxPointsPerExport goes in
// several requests; the requests a receiver accepted are not sent again when a later
// one fails and the batch is retried.
type Exporter struct {
	exp sdkmetric.Exporter
	res *resource.Resource
	log *slog.Logger

	mu       sync.Mutex
	accepted map[string]int // batch id -> requests of it the receiver accepted
	rejected metric.Int64Counter
}

// NewOTLPExporter returns an Exporter sending over OTLP/gRPC with opts (endpoint, TLS,
// headers; the standard OTEL_EXPORTER_OTLP_* variables apply under them), under res
// (which should name the replica: service.instance.id). The exporter's own retries are
// off: a failed export is retried by the Aggregator with its next flush.
func NewOTLPExporter(ctx context.Context, res *resource.Resource, log *slog.Logger, opts ...otlpmetricgrpc.Option) (*Exporter, error) {
	opts = append(slices.Clone(opts), otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}),
		otlpmetricgrpc.WithDialOption(grpc.WithChainUnaryInterceptor(observeExport)))
	exp, err := otlpmetricgrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("usage export: %w", err)
	}
	return NewExporter(exp, res, log)
}

// NewExporter returns an Exporter sending through exp.
func NewExporter(exp sdkmetric.Exporter, res *resource.Resource, log *slog.Logger) (*Exporter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rejected, err := otel.Meter(ExportScope).Int64Counter("keygate.usage.export.rejected",
		metric.WithDescription("Usage data points an OTLP receiver accepted the request of but rejected (partial success); not sent again."))
	if err != nil {
		return nil, err
	}
	rejected.Add(context.Background(), 0)
	return &Exporter{exp: exp, res: res, log: log, accepted: map[string]int{}, rejected: rejected}, nil
}

// Close shuts the OTLP exporter down.
func (e *Exporter) Close(ctx context.Context) error { return e.exp.Shutdown(ctx) }

// Maintain does nothing: the receiver keeps the counts.
func (e *Exporter) Maintain(context.Context, time.Time, time.Duration, time.Duration) error {
	return nil
}

// Write sends the batches, each in requests of at most MaxPointsPerExport points,
// skipping the requests of a batch the receiver accepted before. It stops at the first
// request that fails.
func (e *Exporter) Write(ctx context.Context, batches []Batch) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	live := make(map[string]bool, len(batches))
	for _, b := range batches {
		live[b.ID] = true
	}
	for id := range e.accepted {
		if !live[id] {
			delete(e.accepted, id) // written, or dropped by the Aggregator
		}
	}
	for _, b := range batches {
		pts := Points(b)
		for i := e.accepted[b.ID]; i*MaxPointsPerExport < len(pts); i++ {
			chunk := pts[i*MaxPointsPerExport : min(len(pts), (i+1)*MaxPointsPerExport)]
			if err := e.send(ctx, chunk); err != nil {
				return fmt.Errorf("usage export of batch %s (%d points): %w", b.ID, len(pts), err)
			}
			e.accepted[b.ID] = i + 1
		}
	}
	clear(e.accepted)
	return nil
}

// exportResult is what observeExport saw of one Export call.
type exportResult struct {
	called   bool
	code     codes.Code
	rejected int64
	message  string
}

type exportResultKey struct{}

// observeExport records the gRPC status and partial success of an OTLP Export call in
// the exportResult its context carries: the exporter's error alone does not tell a
// request the receiver accepted in part (not to send again) from a failed one.
func observeExport(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if r, ok := ctx.Value(exportResultKey{}).(*exportResult); ok {
		r.called, r.code = true, status.Code(err)
		if resp, ok := reply.(*colmetricpb.ExportMetricsServiceResponse); ok && err == nil {
			r.rejected, r.message = resp.GetPartialSuccess().GetRejectedDataPoints(), resp.GetPartialSuccess().GetErrorMessage()
		}
	}
	return err
}

func (e *Exporter) send(ctx context.Context, pts []metricdata.DataPoint[int64]) error {
	rm := &metricdata.ResourceMetrics{Resource: e.res, ScopeMetrics: []metricdata.ScopeMetrics{{
		Scope: instrumentation.Scope{Name: ExportScope},
		Metrics: []metricdata.Metrics{{
			Name:        ChecksMetric,
			Description: "Checks per key, route, model and outcome, in the part of a minute each point's interval spans.",
			Unit:        "{check}",
			Data:        metricdata.Sum[int64]{DataPoints: pts, Temporality: metricdata.DeltaTemporality, IsMonotonic: true},
		}},
	}}}
	r := &exportResult{}
	err := e.exp.Export(context.WithValue(ctx, exportResultKey{}, r), rm)
	if r.called && r.code == codes.OK {
		// Accepted, perhaps in part: what the receiver rejected is not sent again.
		if r.rejected > 0 {
			e.rejected.Add(ctx, r.rejected)
			e.log.Warn("the OTLP receiver rejected usage points", slog.Int64("points", r.rejected),
				slog.String("message", strings.ToValidUTF8(r.message, "?")))
		}
		return nil
	}
	return err
}

// Points returns the data points of a batch, one per cell, in the order of the cells'
// key id, minute, owner, route, model and outcome. A point's interval is its minute cut
// to the batch's window; a cell counted after its minute and after the window that
// covered it ended (a check that outlasted a flush) keeps its whole minute, as every cell
// does when the window is empty or inverted (the wall clock stepped back). Attribute
// values are made valid UTF-8 (OTLP requires it; the model is the client's).
func Points(b Batch) []metricdata.DataPoint[int64] {
	cells := make([]Cell, 0, len(b.Counts))
	for c := range b.Counts {
		cells = append(cells, c)
	}
	slices.SortFunc(cells, compareCells)
	pts := make([]metricdata.DataPoint[int64], 0, len(cells))
	// Wall-clock times: a window the wall clock stepped back across is no window.
	ws, we := b.Start.Round(0), b.End.Round(0)
	window := !ws.IsZero() && !we.IsZero() && ws.Before(we)
	for _, c := range cells {
		start, end := time.Unix(c.Minute, 0), time.Unix(c.Minute+60, 0)
		if window && ws.Before(end) && start.Before(we) {
			if ws.After(start) {
				start = ws
			}
			if we.Before(end) {
				end = we
			}
		}
		pts = append(pts, metricdata.DataPoint[int64]{
			Attributes: attribute.NewSet(
				attribute.String("key_id", strings.ToValidUTF8(c.KeyID, "\uFFFD")),
				attribute.String("owner", strings.ToValidUTF8(c.Owner, "\uFFFD")),
				attribute.String("route", strings.ToValidUTF8(c.Route, "\uFFFD")),
				attribute.String("model", strings.ToValidUTF8(c.Model, "\uFFFD")),
				attribute.String("outcome", strings.ToValidUTF8(c.Outcome, "\uFFFD"))),
			StartTime: start,
			Time:      end,
			Value:     b.Counts[c],
		})
	}
	return pts
}

package envoy

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/keygate/keygate/authz"
)

// TestCheckSpanContinuesTheTrace: Envoy forwards its trace context in the ext_authz
// call's metadata (traceparent, or B3); the Check span continues that trace, carries the
// decision, and has the Vault read as its child.
func TestCheckSpanContinuesTheTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)))
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, b3.New()))
	t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

	ks := newKeyset(t) // its store takes the tracer set above
	client := serve(t, newServer(t, newEngine(t, ks.store, authz.ProfileMagicx), Options{}),
		grpc.StatsHandler(otelgrpc.NewServerHandler()))

	for name, tc := range map[string]struct {
		md              []string
		traceID, parent string
	}{
		"traceparent": {[]string{"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			"4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"},
		"b3": {[]string{"x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid", "e457b5a2e4d86bd1", "x-b3-sampled", "1"},
			"80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"},
	} {
		t.Run(name, func(t *testing.T) {
			exp.Reset()
			ctx := metadata.AppendToOutgoingContext(context.Background(), tc.md...)
			if resp, err := client.Check(ctx, envoyRequest(t, map[string]string{"authorization": "Bearer " + ks.active})); err != nil || resp.GetOkResponse() == nil {
				t.Fatalf("check: %v %v", resp, err)
			}
			// The server ends its Check span after the answer is on the wire, so the
			// client may see the answer first: wait for the span (bounded).
			var spans tracetest.SpanStubs
			var check, read *tracetest.SpanStub
			for deadline := time.Now().Add(5 * time.Second); ; {
				spans = exp.GetSpans()
				check, read = nil, nil
				for i := range spans {
					switch {
					case strings.HasSuffix(spans[i].Name, "Authorization/Check"):
						check = &spans[i]
					case spans[i].Name == "vault.read":
						read = &spans[i]
					}
				}
				if (check != nil && read != nil) || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if check == nil || read == nil {
				t.Fatalf("spans %v: want the Check span and a vault.read", names(spans))
			}
			if check.SpanContext.TraceID().String() != tc.traceID || check.Parent.SpanID().String() != tc.parent {
				t.Fatalf("Check span in trace %s under %s, want %s under %s",
					check.SpanContext.TraceID(), check.Parent.SpanID(), tc.traceID, tc.parent)
			}
			if read.Parent.SpanID() != check.SpanContext.SpanID() || read.SpanContext.TraceID() != check.SpanContext.TraceID() {
				t.Fatal("the Vault read is not a child of the Check span")
			}
			attrs := map[string]string{}
			for _, a := range check.Attributes {
				attrs[string(a.Key)] = a.Value.Emit()
			}
			if attrs["keygate.decision"] != "allow" || attrs["keygate.reason"] != "allowed" {
				t.Fatalf("Check span attributes %v", attrs)
			}
			for _, s := range spans {
				for _, a := range s.Attributes {
					if strings.Contains(a.Value.Emit(), ks.active[len(prefix):len(prefix)+20]) {
						t.Fatalf("span %s carries key material in %s", s.Name, a.Key)
					}
				}
			}
		})
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

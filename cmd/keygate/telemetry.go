package main

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"

	"github.com/keygate/keygate/certs"
)

// telemetry is what setupTelemetry installed.
type telemetry struct {
	metrics  http.Handler // the /metrics page
	tracing  bool         // traces are exported (OTLP)
	shutdown func(context.Context) error
}

// otlpWanted reports whether the standard OTEL_EXPORTER_OTLP_* variables ask for an OTLP
// export of signal ("METRICS" or "TRACES").
func otlpWanted(signal string) bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

// setupTelemetry installs the global OTel providers before anything takes instruments
// from them: metrics for the Prometheus /metrics page and, when the OTLP variables are
// set, pushed over OTLP; traces over OTLP when set; W3C trace context, baggage and B3
// propagation (what Envoy forwards). certFiles are the PEM files whose certificates'
// remaining lifetime is exported.
func setupTelemetry(ctx context.Context, certFiles []string) (*telemetry, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("keygate"), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	promExp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExp)}
	if otlpWanted("METRICS") {
		exp, err := otlpmetricgrpc.New(ctx)
		if err != nil {
			return nil, err
		}
		mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
	}
	mp := sdkmetric.NewMeterProvider(mopts...)
	otel.SetMeterProvider(mp)
	shutdowns := []func(context.Context) error{mp.Shutdown}
	tracing := otlpWanted("TRACES")
	if tracing {
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, err
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
		otel.SetTracerProvider(tp)
		shutdowns = append(shutdowns, tp.Shutdown)
	}
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{},
		b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader|b3.B3SingleHeader))))

	if err := registerProcessMetrics(certFiles); err != nil {
		return nil, err
	}
	return &telemetry{
		metrics: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		tracing: tracing,
		shutdown: func(ctx context.Context) error {
			var errs []error
			for _, f := range shutdowns {
				errs = append(errs, f(ctx))
			}
			return errors.Join(errs...)
		},
	}, nil
}

// registerProcessMetrics exports build information and the remaining lifetime of every
// certificate in certFiles (read at each collection, so a replaced file shows).
func registerProcessMetrics(certFiles []string) error {
	m := otel.Meter("github.com/keygate/keygate/cmd/keygate")
	build, err := m.Int64ObservableGauge("keygate.build.info",
		metric.WithDescription("1, with the version and Go version as attributes."))
	if err != nil {
		return err
	}
	expiry, err := m.Float64ObservableGauge("keygate.certificate.expiry", metric.WithUnit("s"),
		metric.WithDescription("Seconds until each certificate keygate loads expires (negative: expired)."))
	if err != nil {
		return err
	}
	buildAttrs := metric.WithAttributes(attribute.String("version", version), attribute.String("go_version", runtime.Version()))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(build, 1, buildAttrs)
		for _, f := range certFiles {
			for _, c := range certificates(f) {
				o.ObserveFloat64(expiry, time.Until(c.NotAfter).Seconds(), metric.WithAttributes(
					attribute.String("file", f), attribute.String("subject", c.Subject.CommonName)))
			}
		}
		return nil
	}, build, expiry)
	return err
}

// certificates returns the certificates in a PEM file; none when it cannot be read.
func certificates(path string) []*x509.Certificate {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return certs.ParseCertificates(raw)
}

// registerTLSMetrics exports each listener's certificate reloads and failed reloads (a
// failed reload keeps the old certificates).
func registerTLSMetrics(reloaders map[string]*certs.Reloader) error {
	if len(reloaders) == 0 {
		return nil
	}
	m := otel.Meter("github.com/keygate/keygate/cmd/keygate")
	ok, err := m.Int64ObservableCounter("keygate.tls.reloads", metric.WithDescription("Certificate reloads that took effect, by listener."))
	if err != nil {
		return err
	}
	failed, err := m.Int64ObservableCounter("keygate.tls.reload.failures", metric.WithDescription("Certificate reloads that failed and kept the old state, by listener."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for name, r := range reloaders {
			reloads, failures := r.Stats()
			attrs := metric.WithAttributes(attribute.String("listener", name))
			o.ObserveInt64(ok, reloads, attrs)
			o.ObserveInt64(failed, failures, attrs)
		}
		return nil
	}, ok, failed)
	return err
}

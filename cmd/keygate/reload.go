package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/keygate/keygate/certs"
)

// live is what keygate serve changes while it runs: on SIGHUP everything below is
// reloaded at once; the certificate files are also polled every tls.reload_interval.
// Anything that fails to load keeps its old state, is logged and counted.
type live struct {
	hup   <-chan os.Signal // SIGHUP, registered for the whole life of serve
	level *slog.LevelVar   // log_level
	// config reads the configuration file again, with the command line's flags applied.
	config func() (config, error)
	// current is the configuration serve runs with; a reload compares against it.
	current config
	// tls are the listeners' certificates and client_certs' CA bundle and CRL, by name
	// ("grpc", "http", "admin", "terminate", "client_certs").
	tls map[string]*certs.Reloader
	log *slog.Logger

	configReloads, configFailures atomic.Int64
}

// run reloads on SIGHUP and watches the certificate files until ctx ends.
func (l *live) run(ctx context.Context, every time.Duration) {
	for name, r := range l.tls {
		go r.Watch(ctx, every, func(err error) {
			l.log.Error("reload failed; keeping the old state", slog.String("what", name), slog.String("error", err.Error()))
		})
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.hup:
			l.reload()
		}
	}
}

// reload reloads everything reloadable once (SIGHUP).
func (l *live) reload() {
	l.log.Info("SIGHUP: reloading")
	defer l.log.Info("SIGHUP: reload done")
	for name, r := range l.tls {
		if err := r.Reload(); err != nil {
			l.log.Error("reload failed; keeping the old state", slog.String("what", name), slog.String("error", err.Error()))
		}
	}
	if l.config == nil {
		return
	}
	cfg, err := l.config()
	var level slog.Level
	if err == nil {
		level, err = cfg.logLevel()
	}
	if err != nil {
		l.configFailures.Add(1)
		l.log.Error("config reload failed; keeping the old settings", slog.String("error", err.Error()))
		return
	}
	l.configReloads.Add(1)
	if cfg.LogLevel != l.current.LogLevel {
		l.log.Info("log level changed", slog.String("from", l.current.LogLevel), slog.String("to", cfg.LogLevel))
		l.level.Set(level)
		l.current.LogLevel = cfg.LogLevel
	}
	if changed := restartOnly(l.current, cfg); len(changed) > 0 {
		l.log.Warn("config changes that take effect only at restart", slog.String("fields", strings.Join(changed, ",")))
	}
}

// restartOnly names the top-level config sections that differ between a and b, other
// than those a reload applies.
func restartOnly(a, b config) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := range va.NumField() {
		f := va.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "log_level" || !f.IsExported() { // unexported: where it was read from
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}

// registerReloadMetrics exports the configuration file's reloads and failed reloads
// (the certificate files' are keygate.tls.reloads and keygate.tls.reload.failures).
func registerReloadMetrics(l *live) error {
	m := otel.Meter("github.com/keygate/keygate/cmd/keygate")
	ok, err := m.Int64ObservableCounter("keygate.config.reloads", metric.WithDescription("SIGHUP reloads of the configuration file that succeeded."))
	if err != nil {
		return err
	}
	failed, err := m.Int64ObservableCounter("keygate.config.reload.failures",
		metric.WithDescription("SIGHUP reloads of the configuration file that failed and kept the old settings."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(ok, l.configReloads.Load())
		o.ObserveInt64(failed, l.configFailures.Load())
		return nil
	}, ok, failed)
	return err
}

// clientCertReloader loads client_certs' CA bundle and CRL; nil when no CA is
// configured. They reload like the listeners' certificates.
func (cfg *config) clientCertReloader(onReload func()) (*certs.Reloader, error) {
	// clientCerts checks the settings and the files, with their field names in errors.
	if _, err := cfg.clientCerts(); err != nil || cfg.ClientCerts.CAFile == "" {
		return nil, err
	}
	r, err := certs.NewReloader(certs.ReloaderConfig{ClientCAFile: cfg.ClientCerts.CAFile, CRLFile: cfg.ClientCerts.CRLFile, OnReload: onReload})
	if err != nil {
		return nil, fmt.Errorf("client_certs: %w", err)
	}
	return r, nil
}

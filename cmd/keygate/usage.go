package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"google.golang.org/grpc/credentials"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/certs"
	keyusage "github.com/keygate/keygate/usage"
)

// usageConfig is the configuration's usage section: per-key usage analytics.
type usageConfig struct {
	Store           string         `json:"store"`             // "" (off), sqlite or postgres
	SQLitePath      string         `json:"sqlite_path"`       // default keygate-usage.db (in the working directory)
	PostgresDSN     string         `json:"postgres_dsn"`      // a URL or key=value DSN
	PostgresDSNFile string         `json:"postgres_dsn_file"` // a file holding the DSN (keeps a password out of the config)
	Flush           configDuration `json:"flush"`             // default 1m
	RollupAfter     configDuration `json:"rollup_after"`      // default 48h
	Retention       configDuration `json:"retention"`         // default 90d
	MaxCells        int            `json:"max_cells"`         // per flush window; default 100000
	Export          string         `json:"export"`            // "" (off) or otlp
	OTLP            usageOTLP      `json:"otlp"`              // export: otlp
}

// usageOTLP is where the export sends the counts. Unset fields take the standard
// OTEL_EXPORTER_OTLP_* variables (endpoint, certificates, insecure, headers), as the
// telemetry exporter does.
type usageOTLP struct {
	Endpoint string         `json:"endpoint"`  // host:port
	Insecure bool           `json:"insecure"`  // plaintext gRPC
	CAFile   string         `json:"ca_file"`   // CA bundle to verify the receiver
	CertFile string         `json:"cert_file"` // client certificate (mTLS)
	KeyFile  string         `json:"key_file"`  // its key
	Timeout  configDuration `json:"timeout"`   // per request; default 10s
}

// checkValues checks the fields without reading the files they name.
func (o *usageOTLP) checkValues() error {
	if o.Endpoint != "" {
		if err := checkAddr(o.Endpoint); err != nil {
			return fmt.Errorf("usage.otlp.endpoint: %w", err)
		}
	}
	switch {
	case o.Timeout < 0:
		return errors.New("usage.otlp.timeout: must not be negative")
	case o.Insecure && (o.CAFile != "" || o.CertFile != "" || o.KeyFile != ""):
		return errors.New("usage.otlp.insecure: plaintext excludes ca_file, cert_file and key_file")
	case (o.CertFile == "") != (o.KeyFile == ""):
		return errors.New("usage.otlp.cert_file: cert_file and key_file go together")
	}
	return nil
}

// options returns the OTLP exporter's options for the fields that are set, reading
// the certificate files.
func (o *usageOTLP) options() ([]otlpmetricgrpc.Option, error) {
	if err := o.checkValues(); err != nil {
		return nil, err
	}
	var opts []otlpmetricgrpc.Option
	if o.Endpoint != "" {
		opts = append(opts, otlpmetricgrpc.WithEndpoint(o.Endpoint))
	}
	if o.Timeout > 0 {
		opts = append(opts, otlpmetricgrpc.WithTimeout(time.Duration(o.Timeout)))
	}
	if o.Insecure {
		return append(opts, otlpmetricgrpc.WithInsecure()), nil
	}
	if o.CAFile == "" && o.CertFile == "" {
		return opts, nil // the OTEL_EXPORTER_OTLP_* variables, or the system's roots
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		raw, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("usage.otlp.ca_file: %w", err)
		}
		cas := certs.ParseCertificates(raw)
		if len(cas) == 0 {
			return nil, fmt.Errorf("usage.otlp.ca_file: %s holds no PEM certificate", o.CAFile)
		}
		tc.RootCAs = x509.NewCertPool()
		for _, c := range cas {
			tc.RootCAs.AddCert(c)
		}
	}
	if o.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("usage.otlp.cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tc))), nil
}

// checkValues reports the usage section's problems, for config validate.
func (u *usageConfig) checkValues(c *checker) {
	switch u.Store {
	case "", "sqlite":
	case "postgres":
		if (u.PostgresDSN == "") == (u.PostgresDSNFile == "") {
			c.fail("usage.store", "postgres needs postgres_dsn or postgres_dsn_file (one of them)")
		}
	default:
		c.fail("usage.store", "%q: want sqlite, postgres, or nothing (off)", u.Store)
	}
	switch u.Export {
	case "":
	case "otlp":
		if err := u.OTLP.checkValues(); err != nil {
			path, msg, _ := strings.Cut(err.Error(), ": ")
			c.fail(path, "%s", msg)
		}
	default:
		c.fail("usage.export", "%q: want otlp, or nothing (off)", u.Export)
	}
	if u.Store == "" && u.Export == "" {
		return
	}
	for path, d := range map[string]configDuration{"usage.flush": u.Flush, "usage.rollup_after": u.RollupAfter, "usage.retention": u.Retention} {
		if d < 0 {
			c.fail(path, "must not be negative")
		}
	}
	if u.MaxCells < 0 {
		c.fail("usage.max_cells", "must not be negative")
	}
	_, err := keyusage.NewAggregator(nil, keyusage.Options{Flush: time.Duration(u.Flush), RollupAfter: time.Duration(u.RollupAfter),
		Retention: time.Duration(u.Retention), MaxCells: u.MaxCells, ReplicaID: "validate"})
	if err != nil && u.Flush >= 0 && u.RollupAfter >= 0 && u.Retention >= 0 && u.MaxCells >= 0 {
		c.fail("usage", "%v", err)
	}
}

// checkFiles reads the files the usage section names, for config validate.
func (u *usageConfig) checkFiles(c *checker) {
	if u.Store == "postgres" && u.PostgresDSNFile != "" {
		if b, err := os.ReadFile(u.PostgresDSNFile); err != nil {
			c.fail("usage.postgres_dsn_file", "%v", err)
		} else if len(strings.TrimSpace(string(b))) == 0 {
			c.fail("usage.postgres_dsn_file", "%s is empty", u.PostgresDSNFile)
		}
	}
	if u.Export == "otlp" && u.OTLP.checkValues() == nil {
		if _, err := u.OTLP.options(); err != nil {
			path, msg, _ := strings.Cut(err.Error(), ": ")
			c.fail(path, "%s", msg)
		}
	}
}

// defaultSQLitePath is where SQLite keeps the counts when usage.sqlite_path is unset.
const defaultSQLitePath = "keygate-usage.db"

// openUsage opens the configured usage store; nil when usage analytics are off.
func (u *usageConfig) open(ctx context.Context) (*keyusage.SQLStore, error) {
	switch u.Store {
	case "":
		return nil, nil
	case "sqlite":
		path := u.SQLitePath
		if path == "" {
			path = defaultSQLitePath
		}
		return keyusage.OpenSQLite(ctx, path)
	case "postgres":
		dsn := u.PostgresDSN
		switch {
		case dsn != "" && u.PostgresDSNFile != "":
			return nil, errors.New("usage: set postgres_dsn or postgres_dsn_file, not both")
		case u.PostgresDSNFile != "":
			raw, err := os.ReadFile(u.PostgresDSNFile)
			if err != nil {
				return nil, fmt.Errorf("usage.postgres_dsn_file: %w", err)
			}
			dsn = strings.TrimSpace(string(raw))
		}
		if dsn == "" {
			return nil, errors.New("usage: store postgres needs postgres_dsn or postgres_dsn_file")
		}
		return keyusage.OpenPostgres(ctx, dsn)
	}
	return nil, fmt.Errorf("usage.store %q: want sqlite, postgres, or nothing (off)", u.Store)
}

// start opens the store and the export and starts the aggregator, which flushes until
// ctx ends. stop waits for its last flush and closes both. agg is nil when usage is
// off; store is nil without usage.store (an export alone).
func (u *usageConfig) start(ctx context.Context, log *slog.Logger) (agg *keyusage.Aggregator, store *keyusage.SQLStore, stop func(), err error) {
	nop := func() {}
	if u.Export != "" && u.Export != "otlp" {
		return nil, nil, nop, fmt.Errorf("usage.export %q: want otlp, or nothing (off)", u.Export)
	}
	if store, err = u.open(ctx); err != nil {
		return nil, nil, nop, err
	}
	if store == nil && u.Export == "" {
		return nil, nil, nop, nil
	}
	closeAll := func() {}
	if store != nil {
		closeAll = func() { store.Close() }
	}
	opts := keyusage.Options{Flush: time.Duration(u.Flush), RollupAfter: time.Duration(u.RollupAfter),
		Retention: time.Duration(u.Retention), MaxCells: u.MaxCells, Logger: log, ReplicaID: keyusage.NewReplicaID()}
	var exp *keyusage.Exporter
	if u.Export == "otlp" {
		if exp, err = u.exporter(ctx, opts.ReplicaID, log); err != nil {
			closeAll()
			return nil, nil, nop, err
		}
		opts.Export = exp
		closeStore := closeAll
		closeAll = func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = exp.Close(sctx)
			closeStore()
		}
	}
	var w keyusage.Writer
	if store != nil {
		w = store // an untyped nil without a store
	}
	if agg, err = keyusage.NewAggregator(w, opts); err != nil {
		closeAll()
		return nil, nil, nop, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { agg.Run(runCtx); close(done) }()
	dialect := "none"
	if store != nil {
		dialect = store.Dialect()
	}
	log.Info("usage analytics on", slog.String("store", dialect), slog.String("export", u.Export), slog.String("replica", agg.ReplicaID()))
	return agg, store, func() { cancel(); <-done; closeAll() }, nil
}

// exporter makes the OTLP export, under keygate's resource with the replica's id as
// service.instance.id (so that the receiver tells replicas' points apart).
func (u *usageConfig) exporter(ctx context.Context, replica string, log *slog.Logger) (*keyusage.Exporter, error) {
	opts, err := u.OTLP.options()
	if err != nil {
		return nil, err
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("keygate"),
		semconv.ServiceVersion(version), semconv.ServiceInstanceID(replica)))
	if err != nil {
		return nil, err
	}
	return keyusage.NewOTLPExporter(ctx, res, log, opts...)
}

// keysUsageCmd is "keygate keys usage ID": a key's counts, read from the usage store.
func keysUsageCmd(ctx context.Context, c *keysCommand, args []string) error {
	from := c.fs.String("from", "", "start, RFC 3339 (default: 24h before --to)")
	to := c.fs.String("to", "", "end, RFC 3339 (default: now)")
	step := c.fs.String("step", "hour", "minute, hour or day")
	by := c.fs.String("by", "", "route, model or outcome (default: totals)")
	id, err := c.parse(args, true)
	if err != nil {
		return err
	}
	if len(id) > 64 || strings.ContainsFunc(id, func(r rune) bool {
		return r > unicode.MaxASCII || !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_')
	}) {
		return fmt.Errorf("keys usage: %q is not a key id", id)
	}
	if c.cfg, err = c.common.load(c.fs); err != nil {
		return err
	}
	store, err := c.cfg.Usage.open(ctx)
	if err != nil {
		return err
	}
	if store == nil {
		return errors.New("keys usage: there is no usage store (set usage.store in the configuration given with --config)")
	}
	defer store.Close()
	q := keyusage.Query{KeyID: id, Step: keyusage.Step(*step), By: keyusage.Dimension(*by), To: time.Now()}
	if *to != "" {
		if q.To, err = time.Parse(time.RFC3339, *to); err != nil {
			return fmt.Errorf("keys usage: --to: want an RFC 3339 time such as 2026-11-24T10:00:00Z")
		}
	}
	q.From = q.To.Add(-24 * time.Hour)
	if *from != "" {
		if q.From, err = time.Parse(time.RFC3339, *from); err != nil {
			return fmt.Errorf("keys usage: --from: want an RFC 3339 time such as 2026-11-23T10:00:00Z")
		}
	}
	if q.By == keyusage.DimKey {
		return errors.New("keys usage: --by: want route, model or outcome")
	}
	if q, err = q.Normalize(); err != nil {
		return fmt.Errorf("keys usage: %w", err)
	}
	pts, err := store.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("keys usage: %w", err)
	}
	resp := admin.UsageResponse{KeyID: id, From: q.From, To: q.To, Step: q.Step, By: string(q.By), Points: []admin.UsagePoint{}}
	for _, p := range pts {
		resp.Total += p.Count
		resp.Points = append(resp.Points, admin.UsagePoint{Time: p.Time, By: string(q.By), Value: p.Group, Count: p.Count})
	}
	if c.json {
		return c.printJSON(resp)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	if q.By != keyusage.DimNone {
		fmt.Fprintf(tw, "TIME\t%s\tCOUNT\n", strings.ToUpper(string(q.By)))
	} else {
		fmt.Fprintf(tw, "TIME\tCOUNT\n")
	}
	for _, p := range resp.Points {
		if q.By != keyusage.DimNone {
			fmt.Fprintf(tw, "%s\t%s\t%d\n", p.Time.Format(time.RFC3339), printable(p.Value), p.Count)
		} else {
			fmt.Fprintf(tw, "%s\t%d\n", p.Time.Format(time.RFC3339), p.Count)
		}
	}
	fmt.Fprintf(tw, "total\t%s%d\n", map[bool]string{true: "\t", false: ""}[q.By != keyusage.DimNone], resp.Total)
	return tw.Flush()
}

// printable shows a value for a terminal: "-" when empty, quoted when it holds
// anything but printable characters and no spaces (a model name is the client's).
func printable(s string) string {
	switch {
	case s == "":
		return "-"
	case strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || unicode.IsSpace(r) }):
		return strconv.QuoteToASCII(s)
	}
	return s
}

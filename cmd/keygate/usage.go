package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/keygate/keygate/admin"
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

// start opens the store and starts the aggregator, which flushes until ctx ends. stop
// waits for its last flush and closes the store. Both are nil when usage is off.
func (u *usageConfig) start(ctx context.Context, log *slog.Logger) (agg *keyusage.Aggregator, store *keyusage.SQLStore, stop func(), err error) {
	if store, err = u.open(ctx); err != nil || store == nil {
		return nil, nil, func() {}, err
	}
	agg, err = keyusage.NewAggregator(store, keyusage.Options{Flush: time.Duration(u.Flush), RollupAfter: time.Duration(u.RollupAfter),
		Retention: time.Duration(u.Retention), MaxCells: u.MaxCells, Logger: log})
	if err != nil {
		store.Close()
		return nil, nil, func() {}, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { agg.Run(runCtx); close(done) }()
	log.Info("usage analytics on", slog.String("store", store.Dialect()), slog.String("replica", agg.ReplicaID()))
	return agg, store, func() { cancel(); <-done; store.Close() }, nil
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
		return errors.New("keys usage: usage analytics are off (set usage.store in the configuration given with --config)")
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

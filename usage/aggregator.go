package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/keygate/keygate/authz"
)

// Writer is what an Aggregator needs from a store; *SQLStore is one, and *Exporter
// (whose Maintain does nothing) another.
type Writer interface {
	Write(ctx context.Context, batches []Batch) error
	Maintain(ctx context.Context, now time.Time, rollupAfter, retention time.Duration) error
}

// Defaults of Options.
const (
	DefaultFlush       = time.Minute
	DefaultRollupAfter = 48 * time.Hour
	DefaultRetention   = 90 * 24 * time.Hour
	DefaultMaxCells    = 100_000
	DefaultMaxPending  = 60
)

// maintainEvery is how often an Aggregator rolls up and applies the retention.
const maintainEvery = 10 * time.Minute

// Options configures an Aggregator. Zero values mean the defaults.
type Options struct {
	Flush       time.Duration // how often counts are written; default 1m
	RollupAfter time.Duration // minute rows become hour rows after this; default 48h
	Retention   time.Duration // rows are deleted after this; default 90 days
	// MaxCells bounds the distinct cells one flush window holds; a check that would
	// make one more is not counted, and counted as dropped. Default 100,000.
	MaxCells int
	// MaxPending bounds the failed batches kept for the next flush; when one more fails
	// the oldest is dropped (and its counts counted as dropped). Default 60.
	MaxPending int
	// ReplicaID names this process in batch ids; "" makes one (NewReplicaID).
	ReplicaID string
	// Export, when set, is a second destination of every batch (an *Exporter), with its
	// own queue of failed batches (bounded by MaxPending), retried with the next flush
	// independently of the store's, so a failure of one never writes the other twice.
	Export Writer
	Logger *slog.Logger // nil discards
}

// numShards spreads concurrent Counts over independent locks.
const numShards = 32

// cellKey is a cell as Count sees it: what the decision already holds, turned into a
// Cell only at flush time. The route is the policy's *Route (hashing a pointer costs
// less than hashing its name); the owner, fixed per key id, is in the value.
type cellKey struct {
	minute int64
	keyID  string
	route  *authz.Route
	model  string
	reason authz.Reason
}

type cellValue struct {
	n     int64
	owner string
}

type shard struct {
	mu    sync.Mutex
	cells map[cellKey]*cellValue
	drops int64
	_     [40]byte // keeps neighbouring shards' locks off one cache line
}

// destination is where batches go (the store, the export), with its failed batches.
type destination struct {
	name    string // "store" or "export", in logs
	w       Writer
	pending []Batch
	writes  metric.Int64Counter // by outcome
	dropped metric.Int64Counter // checks in failed batches dropped for newer ones
}

// Aggregator counts checks in memory and writes them to a store, an export or both,
// every flush interval. Count is safe for concurrent use and never waits on either.
type Aggregator struct {
	store    Writer // nil without a store
	opts     Options
	seed     maphash.Seed
	shards   [numShards]shard
	perShard int

	flushMu     sync.Mutex // one flush at a time; guards the fields below
	seq         uint64
	windowStart time.Time
	dests       []*destination

	log      *slog.Logger
	dropped  metric.Int64Counter
	okAttr   metric.AddOption
	failAttr metric.AddOption
}

// NewAggregator returns an Aggregator writing to store (nil: none) and opts.Export
// (nil: none). Its metrics go to the global OTel MeterProvider: keygate.usage.flushes
// (store writes by outcome), keygate.usage.dropped (checks not counted, or lost from
// the store's queue), and with an export keygate.usage.exports (by outcome) and
// keygate.usage.export.dropped (checks lost from the export's queue).
func NewAggregator(store Writer, opts Options) (*Aggregator, error) {
	if opts.Flush == 0 {
		opts.Flush = DefaultFlush
	}
	if opts.RollupAfter == 0 {
		opts.RollupAfter = DefaultRollupAfter
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.MaxCells == 0 {
		opts.MaxCells = DefaultMaxCells
	}
	if opts.MaxPending == 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if opts.ReplicaID == "" {
		opts.ReplicaID = replicaID()
	}
	a := &Aggregator{store: store, opts: opts, seed: maphash.MakeSeed(), log: opts.Logger,
		perShard: max(1, opts.MaxCells/numShards), windowStart: time.Now()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for i := range a.shards {
		a.shards[i].cells = map[cellKey]*cellValue{}
	}
	m := otel.Meter("github.com/keygate/keygate/usage")
	flushes, err := m.Int64Counter("keygate.usage.flushes",
		metric.WithDescription("Usage flushes to the store by outcome (ok, failed); a failed flush is written again with the next."))
	if err != nil {
		return nil, err
	}
	if a.dropped, err = m.Int64Counter("keygate.usage.dropped",
		metric.WithDescription("Checks not recorded in usage: over the cells bound, or in a failed batch dropped for a newer one.")); err != nil {
		return nil, err
	}
	a.okAttr = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "ok")))
	a.failAttr = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failed")))
	ctx := context.Background()
	flushes.Add(ctx, 0, a.okAttr)
	flushes.Add(ctx, 0, a.failAttr)
	a.dropped.Add(ctx, 0)
	if store != nil {
		a.dests = append(a.dests, &destination{name: "store", w: store, writes: flushes, dropped: a.dropped})
	}
	if opts.Export != nil {
		exports, err := m.Int64Counter("keygate.usage.exports",
			metric.WithDescription("Usage exports over OTLP by outcome (ok, failed); a failed export is sent again with the next."))
		if err != nil {
			return nil, err
		}
		lost, err := m.Int64Counter("keygate.usage.export.dropped",
			metric.WithDescription("Checks not exported: in a failed export batch dropped for a newer one."))
		if err != nil {
			return nil, err
		}
		exports.Add(ctx, 0, a.okAttr)
		exports.Add(ctx, 0, a.failAttr)
		lost.Add(ctx, 0)
		a.dests = append(a.dests, &destination{name: "export", w: opts.Export, writes: exports, dropped: lost})
	}
	return a, nil
}

func (o Options) validate() error {
	switch {
	case o.Flush < time.Second || o.Flush > time.Hour:
		return fmt.Errorf("usage flush %s: want 1s to 1h", o.Flush)
	case o.RollupAfter < time.Hour:
		return fmt.Errorf("usage rollup_after %s: want at least 1h", o.RollupAfter)
	case o.Retention < o.RollupAfter:
		return fmt.Errorf("usage retention %s: want at least rollup_after (%s)", o.Retention, o.RollupAfter)
	case o.MaxCells < 0 || o.MaxPending < 0:
		return fmt.Errorf("usage bounds must not be negative")
	}
	return nil
}

// NewReplicaID returns a replica id unique per start: the host name, the process id
// and random bytes.
func NewReplicaID() string { return replicaID() }

func replicaID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "keygate"
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// ReplicaID returns the id this Aggregator's batches start with.
func (a *Aggregator) ReplicaID() string { return a.opts.ReplicaID }

// Count counts one decided check at the time it was made. A check with no key record
// (missing, malformed or unknown key) counts under an empty key id and owner.
func (a *Aggregator) Count(d *authz.Decision, at time.Time) {
	sec := at.Unix()
	k := cellKey{minute: sec - sec%60, keyID: d.Record.ID, route: d.Route, model: d.Model, reason: d.Reason}
	if sec < 0 && sec%60 != 0 {
		k.minute -= 60
	}
	s := &a.shards[(maphash.String(a.seed, k.keyID)+uint64(k.reason))%numShards]
	s.mu.Lock()
	if v := s.cells[k]; v != nil {
		v.n++ // the steady state: one map lookup, no allocation
	} else if len(s.cells) < a.perShard {
		// A new cell keeps copies, not the request's memory the strings may share.
		k.model = strings.Clone(k.model)
		s.cells[k] = &cellValue{n: 1, owner: d.Record.Owner}
	} else {
		s.drops++
	}
	s.mu.Unlock()
}

// swap takes every shard's cells, leaving empty maps of the same size behind, and
// returns them as one map of cells.
func (a *Aggregator) swap() (map[Cell]int64, int64) {
	out := map[Cell]int64{}
	var drops int64
	for i := range a.shards {
		s := &a.shards[i]
		s.mu.Lock()
		cells, d := s.cells, s.drops
		s.cells, s.drops = make(map[cellKey]*cellValue, len(cells)), 0
		s.mu.Unlock()
		drops += d
		for k, v := range cells {
			c := Cell{Minute: k.minute, KeyID: k.keyID, Owner: v.owner, Model: k.model, Outcome: k.reason.String()}
			if k.route != nil {
				c.Route = k.route.Name
			}
			out[c] += v.n
		}
	}
	return out, drops
}

// Flush writes the counts since the last flush as one batch (the window from the last
// flush to now) to each destination, in one write each with the destination's failed
// batches. On failure a destination keeps its batches for the next flush.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	cells, drops := a.swap()
	now := time.Now()
	if len(cells) > 0 {
		a.seq++
		b := Batch{ID: fmt.Sprintf("%s-%d", a.opts.ReplicaID, a.seq), Start: a.windowStart, End: now, Counts: cells}
		for _, d := range a.dests {
			d.pending = append(d.pending, b) // shared read-only by the destinations
		}
	}
	a.windowStart = now
	if drops > 0 {
		a.dropped.Add(ctx, drops)
		a.log.Warn("usage counts dropped", slog.Int64("checks", drops))
	}
	var errs []error
	for _, d := range a.dests {
		if err := a.write(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (a *Aggregator) write(ctx context.Context, d *destination) error {
	var lost int64
	for len(d.pending) > a.opts.MaxPending {
		for _, n := range d.pending[0].Counts {
			lost += n
		}
		d.pending = d.pending[1:]
	}
	if lost > 0 {
		d.dropped.Add(ctx, lost)
		a.log.Warn("usage batches dropped for newer ones", slog.String("to", d.name), slog.Int64("checks", lost))
	}
	if len(d.pending) == 0 {
		return nil
	}
	if err := d.w.Write(ctx, d.pending); err != nil {
		d.writes.Add(ctx, 1, a.failAttr)
		a.log.Warn("usage flush failed; retrying with the next", slog.String("to", d.name),
			slog.Int("batches", len(d.pending)), slog.Any("error", err))
		return err
	}
	d.writes.Add(ctx, 1, a.okAttr)
	d.pending = nil
	return nil
}

// Pending returns how many failed batches wait for the next flush, over the store and
// the export.
func (a *Aggregator) Pending() int {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	n := 0
	for _, d := range a.dests {
		n += len(d.pending)
	}
	return n
}

// Maintain rolls up and applies the retention now.
func (a *Aggregator) Maintain(ctx context.Context) error {
	if a.store == nil {
		return nil
	}
	return a.store.Maintain(ctx, time.Now(), a.opts.RollupAfter, a.opts.Retention)
}

// Run flushes every flush interval (each flush and rollup bounded by the interval, at
// least 10 s), and rolls up and applies the retention every ten minutes, until ctx
// ends; then it flushes one last time (for up to five seconds).
func (a *Aggregator) Run(ctx context.Context) {
	t := time.NewTicker(a.opts.Flush)
	defer t.Stop()
	last := time.Time{}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = a.Flush(fctx)
			cancel()
			return
		case <-t.C:
			// A store that hangs fails the flush (kept for the next) rather than stall
			// the loop; the counters go on meanwhile, bounded by MaxCells.
			fctx, cancel := context.WithTimeout(ctx, max(a.opts.Flush, 10*time.Second))
			_ = a.Flush(fctx)
			if time.Since(last) >= maintainEvery {
				last = time.Now()
				if err := a.Maintain(fctx); err != nil {
					a.log.Warn("usage rollup failed", slog.Any("error", err))
				}
			}
			cancel()
		}
	}
}

package usage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

// Writer is what an Aggregator needs from a store; *SQLStore is one.
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
	// ReplicaID names this process in batch ids; "" makes one from the host name, the
	// process id and random bytes, unique per start.
	ReplicaID string
	Logger    *slog.Logger // nil discards
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

// Aggregator counts checks in memory and writes them to a store every flush interval.
// Count is safe for concurrent use and never waits on the store.
type Aggregator struct {
	store    Writer
	opts     Options
	seed     maphash.Seed
	shards   [numShards]shard
	perShard int

	flushMu sync.Mutex // one flush at a time; guards the fields below
	seq     uint64
	pending []Batch

	log      *slog.Logger
	flushes  metric.Int64Counter
	dropped  metric.Int64Counter
	okAttr   metric.AddOption
	failAttr metric.AddOption
}

// NewAggregator returns an Aggregator writing to store. Its metrics go to the global
// OTel MeterProvider: keygate.usage.flushes (by outcome) and keygate.usage.dropped.
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
		perShard: max(1, opts.MaxCells/numShards)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	for i := range a.shards {
		a.shards[i].cells = map[cellKey]*cellValue{}
	}
	m := otel.Meter("github.com/keygate/keygate/usage")
	var err error
	if a.flushes, err = m.Int64Counter("keygate.usage.flushes",
		metric.WithDescription("Usage flushes by outcome (ok, failed); a failed flush is written again with the next.")); err != nil {
		return nil, err
	}
	if a.dropped, err = m.Int64Counter("keygate.usage.dropped",
		metric.WithDescription("Checks not recorded in usage: over the cells bound, or in a failed batch dropped for a newer one.")); err != nil {
		return nil, err
	}
	a.okAttr = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "ok")))
	a.failAttr = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", "failed")))
	ctx := context.Background()
	a.flushes.Add(ctx, 0, a.okAttr)
	a.flushes.Add(ctx, 0, a.failAttr)
	a.dropped.Add(ctx, 0)
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

// Flush writes the counts since the last flush, with the batches of failed flushes, in
// one transaction. On failure the batches are kept for the next flush.
func (a *Aggregator) Flush(ctx context.Context) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	cells, drops := a.swap()
	if len(cells) > 0 {
		a.seq++
		a.pending = append(a.pending, Batch{ID: fmt.Sprintf("%s-%d", a.opts.ReplicaID, a.seq), Counts: cells})
	}
	for len(a.pending) > a.opts.MaxPending {
		for _, n := range a.pending[0].Counts {
			drops += n
		}
		a.pending = a.pending[1:]
	}
	if drops > 0 {
		a.dropped.Add(ctx, drops)
		a.log.Warn("usage counts dropped", slog.Int64("checks", drops))
	}
	if len(a.pending) == 0 {
		return nil
	}
	if err := a.store.Write(ctx, a.pending); err != nil {
		a.flushes.Add(ctx, 1, a.failAttr)
		a.log.Warn("usage flush failed; retrying with the next", slog.Int("batches", len(a.pending)), slog.Any("error", err))
		return err
	}
	a.flushes.Add(ctx, 1, a.okAttr)
	a.pending = nil
	return nil
}

// Pending returns how many failed batches wait for the next flush.
func (a *Aggregator) Pending() int {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	return len(a.pending)
}

// Maintain rolls up and applies the retention now.
func (a *Aggregator) Maintain(ctx context.Context) error {
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

package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/keygate/keygate/authz"
)

// CacheConfig configures a Cache. Zero values take the documented defaults.
type CacheConfig struct {
	// Size bounds the number of cached records, known and unknown; 0 means 100,000.
	Size int
	// TTL is how long a record is used before it is read again; 0 means 5 minutes.
	// Revocations do not wait for it: the change feed evicts them (see PollInterval).
	TTL time.Duration
	// NegativeTTL is how long an unknown key stays known as unknown; 0 means 30 seconds.
	NegativeTTL time.Duration
	// StaleFor is how long past its TTL a record still serves while Vault is
	// unavailable (fail-static); 0 means 1 hour, a negative value disables it.
	StaleFor time.Duration
	// MissRate is the Vault reads per second allowed for keys not in the cache, with
	// MissBurst reads at once. Beyond it an uncached key is denied without a read
	// (authz.ErrLookupThrottled), so a flood of invented keys cannot flood Vault.
	// 0 means 100 per second; MissBurst 0 means 2 × MissRate.
	MissRate  float64
	MissBurst int
	// SourceMissRate and SourceMissBurst are each client's share of that budget
	// (LookupFrom's source: a client address or certificate), taken before the shared
	// budget, so one client spraying invented keys spends its own share, not everyone's.
	// 0 means a tenth of MissRate (at least 1 per second); SourceMissBurst 0 means
	// 2 × SourceMissRate.
	SourceMissRate  float64
	SourceMissBurst int
	// SprayFailures unknown keys from one source within SprayWindow mark it as a
	// sprayer: its uncached keys are refused without a read (authz.SourceRefusedError)
	// until SprayWindow has passed since. 0 means 100, a negative value disables it;
	// SprayWindow 0 means 1 minute.
	SprayFailures int
	SprayWindow   time.Duration
	// Sources bounds the clients tracked for the above (least recently seen go first);
	// 0 means 10,000.
	Sources int
	// OnSpraySuspected, when set, is called once each time a source is marked as a
	// sprayer, with its failure count (serve writes the auth.spray_suspected audit
	// event). It must not block.
	OnSpraySuspected func(source string, failures int)
	// PollInterval is how often Run reads the change feed; 0 means 500 ms.
	PollInterval time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Metrics exports the cache's counters to the global OTel MeterProvider. Only one
	// cache of a process should (serve's); tests make many.
	Metrics bool
}

// CacheStats counts what a Cache did since it was made.
type CacheStats struct {
	Hits          uint64 // records served from the cache
	NegativeHits  uint64 // unknown keys answered from the cache
	Misses        uint64 // lookups that went to Vault (or would have, but for the budget)
	Evictions     uint64 // records dropped to make room (Size)
	StaleServes   uint64 // records served past their TTL because Vault was unavailable
	Throttled     uint64 // uncached keys denied without a read (miss budget)
	Invalidations uint64 // change-feed polls that evicted records
	// SourceThrottled counts uncached keys denied because their source's share of the
	// miss budget was spent (also counted in Throttled).
	SourceThrottled uint64
	// SourceRefused counts uncached keys refused early from sources marked as sprayers;
	// SpraySuspected counts the times a source was so marked.
	SourceRefused  uint64
	SpraySuspected uint64
}

// Cache is the key-record cache in front of a Store. It implements authz.KeyLookup:
// concurrent misses of one key share a single Vault read; unknown keys are cached
// briefly; uncached keys are read within a budget; known records keep serving for a
// while when Vault is unavailable. Run must be running for revocations to propagate.
//
// A Cache is safe for concurrent use.
type Cache struct {
	store  recordSource
	cfg    CacheConfig
	lru    *lru.Cache[authz.KeyHash, entry]
	group  singleflight.Group
	misses *rate.Limiter
	// sources is each client's share of the miss budget and its recent failures.
	sources *lru.Cache[string, *sourceState]

	// epoch changes whenever the feed evicts records; a read that started in an older
	// epoch may hold a record from before the change and is not cached.
	epoch atomic.Uint64
	// lastContact is when Vault last answered (UnixNano); 0: never.
	lastContact atomic.Int64

	feedMu sync.Mutex
	seen   uint64 // feed generation applied so far
	polled bool   // the feed has been read at least once

	hits, negHits, missCount, evictions, stale, throttled, invalidations atomic.Uint64
	sourceThrottled, sourceRefused, spraySuspected                       atomic.Uint64
}

// sourceState is one client's share of the miss budget and its failures in the
// current window.
type sourceState struct {
	bucket *rate.Limiter
	mu     sync.Mutex
	start  time.Time // the current failure window's start
	fails  int       // unknown keys in it
	until  time.Time // refused until then (a suspected sprayer)
}

var _ authz.KeyLookup = (*Cache)(nil)

// NewCache returns a Cache in front of store.
func NewCache(store *Store, cfg CacheConfig) (*Cache, error) { return newCache(store, cfg) }

func newCache(store recordSource, cfg CacheConfig) (*Cache, error) {
	if cfg.Size == 0 {
		cfg.Size = 100_000
	}
	if cfg.TTL == 0 {
		cfg.TTL = 5 * time.Minute
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = 30 * time.Second
	}
	switch {
	case cfg.StaleFor == 0:
		cfg.StaleFor = time.Hour
	case cfg.StaleFor < 0:
		cfg.StaleFor = 0
	}
	if cfg.MissRate == 0 {
		cfg.MissRate = 100
	}
	if cfg.MissBurst == 0 {
		cfg.MissBurst = max(1, int(2*cfg.MissRate))
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.SourceMissRate == 0 {
		cfg.SourceMissRate = max(1, cfg.MissRate/10)
	}
	if cfg.SourceMissBurst == 0 {
		cfg.SourceMissBurst = max(1, int(2*cfg.SourceMissRate))
	}
	if cfg.SprayFailures == 0 {
		cfg.SprayFailures = 100
	}
	if cfg.SprayWindow == 0 {
		cfg.SprayWindow = time.Minute
	}
	if cfg.Sources == 0 {
		cfg.Sources = 10_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Size < 0 || cfg.TTL < 0 || cfg.NegativeTTL < 0 || cfg.MissRate < 0 || cfg.MissBurst < 0 || cfg.PollInterval < 0 ||
		cfg.SourceMissRate < 0 || cfg.SourceMissBurst < 0 || cfg.SprayWindow < 0 || cfg.Sources < 0 {
		return nil, errors.New("vaultstore: negative cache setting")
	}
	l, err := lru.New[authz.KeyHash, entry](cfg.Size)
	if err != nil {
		return nil, err
	}
	sources, err := lru.New[string, *sourceState](cfg.Sources)
	if err != nil {
		return nil, err
	}
	c := &Cache{store: store, cfg: cfg, lru: l, misses: rate.NewLimiter(rate.Limit(cfg.MissRate), cfg.MissBurst), sources: sources}
	if cfg.Metrics {
		if err := registerCacheMetrics(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Lookup returns the record for hash from the cache, or from Vault, within the shared
// miss budget only.
func (c *Cache) Lookup(ctx context.Context, hash authz.KeyHash) (authz.Record, error) {
	return c.LookupFrom(ctx, hash, authz.Source{})
}

var _ authz.SourceLookup = (*Cache)(nil)

// LookupFrom is Lookup for a request from source (authz.ClientSource): an uncached key
// is read only within source's share of the miss budget, and not at all while source
// is a suspected sprayer. "" is no source: only the shared budget applies.
func (c *Cache) LookupFrom(ctx context.Context, hash authz.KeyHash, src authz.Source) (authz.Record, error) {
	now := c.cfg.Now()
	e, cached := c.lru.Get(hash)
	if cached {
		age := e.age(now)
		switch {
		case e.found && age < c.cfg.TTL:
			c.hits.Add(1)
			return e.record(hash), nil
		case !e.found && age < c.cfg.NegativeTTL:
			c.negHits.Add(1)
			c.failed(sourceKey(src), now)
			return authz.Record{}, fmt.Errorf("%w: cached", ErrKeyNotFound)
		}
	}
	c.missCount.Add(1)
	// A record past its TTL but inside the stale window is refreshed without the miss
	// budget, and serves as it is if Vault cannot answer.
	known := cached && e.found && e.age(now) < c.cfg.TTL+c.cfg.StaleFor
	source := sourceKey(src)
	if !known && source != "" {
		if err := c.refusedNow(source, now); err != nil {
			return authz.Record{}, err
		}
	}
	rec, err := c.fetch(ctx, hash, !known, source)
	if errors.Is(err, ErrKeyNotFound) {
		c.failed(source, now)
	}
	switch {
	case err == nil || errors.Is(err, ErrKeyNotFound) || errors.Is(err, authz.ErrLookupThrottled):
		return rec, err
	case known && errors.Is(err, authz.ErrStoreUnavailable):
		c.stale.Add(1)
		return e.record(hash), nil
	default:
		return authz.Record{}, err
	}
}

// sourceKey names a request's client; "" for none.
func sourceKey(src authz.Source) string {
	if src.IsZero() {
		return ""
	}
	return src.Key()
}

// refusedNow refuses source's uncached keys while it is a suspected sprayer.
func (c *Cache) refusedNow(source string, now time.Time) error {
	st := c.source(source, now)
	st.mu.Lock()
	until := st.until
	st.mu.Unlock()
	if now.Before(until) {
		c.sourceRefused.Add(1)
		return &authz.SourceRefusedError{RetryAfter: until.Sub(now)}
	}
	return nil
}

// spend takes one read from source's share of the miss budget.
func (c *Cache) spend(source string, now time.Time) error {
	if !c.source(source, now).bucket.AllowN(now, 1) {
		c.sourceThrottled.Add(1)
		c.throttled.Add(1)
		return authz.ErrLookupThrottled
	}
	return nil
}

// overShare is a flight refused because its leader's client had no share left; the
// clients that joined it try again with their own share.
type overShare struct {
	source string
	err    error
}

func (e *overShare) Error() string { return e.err.Error() }
func (e *overShare) Unwrap() error { return e.err }

// source returns source's state, tracking it if it is new.
func (c *Cache) source(source string, now time.Time) *sourceState {
	if st, ok := c.sources.Get(source); ok {
		return st
	}
	st := &sourceState{bucket: rate.NewLimiter(rate.Limit(c.cfg.SourceMissRate), c.cfg.SourceMissBurst), start: now}
	if prev, found, _ := c.sources.PeekOrAdd(source, st); found {
		return prev
	}
	return st
}

// failed counts an unknown key from source; at SprayFailures within SprayWindow the
// source is refused for SprayWindow.
func (c *Cache) failed(source string, now time.Time) {
	if source == "" || c.cfg.SprayFailures < 0 {
		return
	}
	st := c.source(source, now)
	st.mu.Lock()
	if now.Sub(st.start) >= c.cfg.SprayWindow {
		st.start, st.fails = now, 0
	}
	st.fails++
	marked := st.fails == c.cfg.SprayFailures
	if marked {
		st.until = now.Add(c.cfg.SprayWindow)
	}
	fails := st.fails
	st.mu.Unlock()
	if marked {
		c.spraySuspected.Add(1)
		if c.cfg.OnSpraySuspected != nil {
			c.cfg.OnSpraySuspected(source, fails)
		}
	}
}

// fetch reads hash from Vault once for all concurrent callers. Each caller waits only
// as long as its own context allows; the read itself is bounded by the store's lookup
// timeout, so a caller that gives up does not fail the others.
//
// Concurrent lookups of one key share one read and spend one unit of budget: the
// client leading the flight pays from its share (source; "" for none). When its share is
// spent, the clients that joined it try once more, leading with their own.
func (c *Cache) fetch(ctx context.Context, hash authz.KeyHash, budget bool, source string) (authz.Record, error) {
	rec, err := c.fly(ctx, hash, budget, source)
	var over *overShare
	if errors.As(err, &over) {
		if over.source != source {
			rec, err = c.fly(ctx, hash, budget, source)
		}
		if errors.As(err, &over) {
			err = over.err
		}
	}
	return rec, err
}

// fly is one flight of fetch.
func (c *Cache) fly(ctx context.Context, hash authz.KeyHash, budget bool, source string) (authz.Record, error) {
	ch := c.group.DoChan(string(hash[:]), func() (any, error) {
		if budget && source != "" {
			if err := c.spend(source, c.cfg.Now()); err != nil {
				return authz.Record{}, &overShare{source: source, err: err}
			}
		}
		if budget && !c.misses.AllowN(c.cfg.Now(), 1) {
			c.throttled.Add(1)
			return authz.Record{}, authz.ErrLookupThrottled
		}
		epoch := c.epoch.Load()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.store.readCap())
		defer cancel()
		rec, err := c.store.Lookup(rctx, hash)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return authz.Record{}, err
		}
		now := c.cfg.Now()
		c.lastContact.Store(now.UnixNano())
		if c.epoch.Load() == epoch && c.lru.Add(hash, newEntry(&rec, err == nil, now)) {
			c.evictions.Add(1) // the least recently used record made room
		}
		return rec, err
	})
	select {
	case res := <-ch:
		rec, _ := res.Val.(authz.Record)
		return rec, res.Err
	case <-ctx.Done():
		return authz.Record{}, fmt.Errorf("%w: %w", ErrVaultUnavailable, ctx.Err())
	}
}

// Run reads the change feed every PollInterval and evicts the records it names, until
// ctx ends. Run it once per Cache.
func (c *Cache) Run(ctx context.Context) {
	t := time.NewTicker(c.cfg.PollInterval)
	defer t.Stop()
	for {
		_ = c.Poll(ctx) // a failed poll is retried on the next tick; Ready reports it
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll reads the change feed once and evicts changed records. When the feed has moved
// on further than it lists (a replica that was cut off for long), or on the first poll,
// it empties the whole cache instead.
func (c *Cache) Poll(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, c.store.readCap())
	defer cancel()
	ch, err := c.store.ReadChanges(rctx)
	if err != nil {
		return err
	}
	c.lastContact.Store(c.cfg.Now().UnixNano())
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	switch {
	case ch.Generation == c.seen && c.polled:
		return nil
	case !c.polled || ch.Generation < c.seen || (len(ch.Recent) > 0 && ch.Oldest > c.seen+1) || (len(ch.Recent) == 0 && ch.Generation > c.seen):
		c.epoch.Add(1)
		c.lru.Purge()
	default:
		c.epoch.Add(1)
		for h, gen := range ch.Recent {
			if gen > c.seen {
				c.lru.Remove(h)
			}
		}
	}
	c.invalidations.Add(1)
	c.seen, c.polled = ch.Generation, true
	return nil
}

// Ready reports whether the cache can still decide: Vault answered within the stale
// window (a read or a feed poll). Before the first answer it is not ready.
func (c *Cache) Ready() bool {
	last := c.lastContact.Load()
	return last != 0 && c.cfg.Now().Sub(time.Unix(0, last)) <= max(c.cfg.StaleFor, 3*c.cfg.PollInterval)
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits: c.hits.Load(), NegativeHits: c.negHits.Load(), Misses: c.missCount.Load(),
		Evictions: c.evictions.Load(), StaleServes: c.stale.Load(), Throttled: c.throttled.Load(),
		Invalidations: c.invalidations.Load(), SourceThrottled: c.sourceThrottled.Load(),
		SourceRefused: c.sourceRefused.Load(), SpraySuspected: c.spraySuspected.Load(),
	}
}

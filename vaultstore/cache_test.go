package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
)

// clock is a settable time source for TTL tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// slow delays every record read by d before passing it on, so concurrent lookups
// surely overlap.
func slow(d time.Duration, next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		time.Sleep(d)
		return next.RoundTrip(r)
	})
}

type cacheFixture struct {
	store   *Store
	cache   *Cache
	reads   *vaulttest.Counter
	clock   *clock
	created int
}

func newCacheFixture(t testing.TB, cfg CacheConfig, delay time.Duration) *cacheFixture {
	t.Helper()
	fx := &cacheFixture{clock: &clock{t: time.Now()}}
	client := vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
		if delay > 0 {
			next = slow(delay, next)
		}
		fx.reads = &vaulttest.Counter{Next: next, Contains: "/records/"}
		return fx.reads
	})
	var err error
	fx.store, err = New(Config{Client: client, Path: vaulttest.UniquePath(t), LookupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Now = fx.clock.Now
	fx.cache, err = NewCache(fx.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *cacheFixture) create(t *testing.T) (string, authz.Record) {
	t.Helper()
	fx.created++
	key, rec := issue(t, authz.KeySpec{Name: fmt.Sprintf("cached %d", fx.created)})
	if err := fx.store.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key, rec
}

func TestCacheOneReadForConcurrentMisses(t *testing.T) {
	fx := newCacheFixture(t, CacheConfig{}, 200*time.Millisecond)
	key, rec := fx.create(t)
	unknown, _ := issue(t, authz.KeySpec{Name: "never stored"})
	for name, k := range map[string]string{"known": key, "unknown": unknown} {
		t.Run(name, func(t *testing.T) {
			before := fx.reads.Count()
			start := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r, err := fx.cache.Lookup(context.Background(), authz.HashKey(k))
					switch {
					case k == key && (err != nil || r.ID != rec.ID):
						errs <- err
					case k == unknown && !errors.Is(err, ErrKeyNotFound):
						errs <- err
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("lookup: %v", err)
			}
			if n := fx.reads.Count() - before; n != 1 {
				t.Fatalf("100 concurrent lookups made %d Vault reads, want 1", n)
			}
		})
	}
}

func TestCacheTTLs(t *testing.T) {
	fx := newCacheFixture(t, CacheConfig{TTL: time.Minute, NegativeTTL: 10 * time.Second}, 0)
	key, _ := fx.create(t)
	unknown, _ := issue(t, authz.KeySpec{Name: "unknown"})
	ctx := context.Background()
	steps := []struct {
		advance time.Duration
		key     string
		reads   int
	}{
		{0, key, 1},                   // first sight
		{30 * time.Second, key, 0},    // fresh
		{31 * time.Second, key, 1},    // past the TTL: read again
		{0, unknown, 1},               // unknown: read once
		{9 * time.Second, unknown, 0}, // still known as unknown
		{2 * time.Second, unknown, 1}, // negative TTL over
	}
	for i, s := range steps {
		fx.clock.Advance(s.advance)
		before := fx.reads.Count()
		_, err := fx.cache.Lookup(ctx, authz.HashKey(s.key))
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			t.Fatal(err)
		}
		if n := fx.reads.Count() - before; n != s.reads {
			t.Fatalf("step %d: %d Vault reads, want %d", i, n, s.reads)
		}
	}
	st := fx.cache.Stats()
	if st.Hits != 1 || st.NegativeHits != 1 || st.Misses != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCacheMissBudgetHoldsUnderSpray(t *testing.T) {
	fx := newCacheFixture(t, CacheConfig{MissRate: 5, MissBurst: 10}, 0)
	key, rec := fx.create(t)
	ctx := context.Background()
	if _, err := fx.cache.Lookup(ctx, authz.HashKey(key)); err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat("mgx-sk-")
	before := fx.reads.Count()
	throttled := 0
	for i := range 500 {
		spray, err := f.Generate(nil) // well-formed, checksum-valid, unknown
		if err != nil {
			t.Fatal(err)
		}
		_, err = fx.cache.Lookup(ctx, authz.HashKey(spray))
		switch {
		case errors.Is(err, authz.ErrLookupThrottled):
			throttled++
		case !errors.Is(err, ErrKeyNotFound):
			t.Fatalf("spray lookup: %v", err)
		}
		if i%50 == 0 { // the cached key is unaffected throughout
			if r, err := fx.cache.Lookup(ctx, authz.HashKey(key)); err != nil || r.ID != rec.ID {
				t.Fatalf("cached key during the spray: %v", err)
			}
		}
	}
	// The clock does not move: exactly the burst reaches Vault, less the one read the
	// valid key's first lookup took.
	if n := fx.reads.Count() - before; n != 9 || throttled != 491 {
		t.Fatalf("spray of 500: %d Vault reads, %d throttled; want 9 and 491", n, throttled)
	}
	if st := fx.cache.Stats(); st.Throttled != 491 {
		t.Fatalf("stats %+v", st)
	}
	// The budget refills with time.
	fx.clock.Advance(time.Second)
	spray, _ := f.Generate(nil)
	if _, err := fx.cache.Lookup(ctx, authz.HashKey(spray)); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("after a second: %v", err)
	}
}

func TestCacheRevocationViaFeed(t *testing.T) {
	// Two replicas with an hour-long TTL share one Vault path.
	fx := newCacheFixture(t, CacheConfig{TTL: time.Hour}, 0)
	other, err := NewCache(fx.store, CacheConfig{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, rec := fx.create(t)
	kept, keptRec := fx.create(t)
	for _, c := range []*Cache{fx.cache, other} {
		if err := c.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{key, kept} {
			if r, err := c.Lookup(ctx, authz.HashKey(k)); err != nil || !r.RevokedAt.IsZero() {
				t.Fatalf("before revoke: %+v %v", r, err)
			}
		}
	}
	if _, err := fx.store.Revoke(ctx, rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	for i, c := range []*Cache{fx.cache, other} {
		// Without a poll the cache still has the old record: the TTL alone would keep it.
		if r, _ := c.Lookup(ctx, authz.HashKey(key)); !r.RevokedAt.IsZero() {
			t.Fatalf("replica %d saw the revocation without polling; the test proves nothing", i)
		}
		if err := c.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		before := fx.reads.Count()
		if r, err := c.Lookup(ctx, authz.HashKey(key)); err != nil || r.RevokedAt.IsZero() {
			t.Fatalf("replica %d after the poll: %+v %v", i, r, err)
		}
		if r, err := c.Lookup(ctx, authz.HashKey(kept)); err != nil || r.ID != keptRec.ID {
			t.Fatalf("replica %d: unchanged key: %v", i, err)
		}
		if n := fx.reads.Count() - before; n != 1 {
			t.Fatalf("replica %d: %d reads after the poll, want 1 (only the revoked key)", i, n)
		}
	}
}

func TestCacheFeedGapPurges(t *testing.T) {
	fx := newCacheFixture(t, CacheConfig{TTL: time.Hour}, 0)
	ctx := context.Background()
	key, _ := fx.create(t)
	if err := fx.cache.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.cache.Lookup(ctx, authz.HashKey(key)); err != nil {
		t.Fatal(err)
	}
	// More changes than the feed lists happen while this replica does not poll.
	hashes := make([]authz.KeyHash, maxRecentChanges+5)
	for i := range hashes {
		hashes[i] = authz.HashKey(string(rune('a' + i%26)))
	}
	if err := fx.store.publish(ctx, hashes...); err != nil {
		t.Fatal(err)
	}
	if err := fx.cache.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	before := fx.reads.Count()
	if _, err := fx.cache.Lookup(ctx, authz.HashKey(key)); err != nil {
		t.Fatal(err)
	}
	if fx.reads.Count()-before != 1 {
		t.Fatal("a replica that missed changes kept its cache")
	}
}

// TestCacheOutage stops a Vault of its own: hung (SIGSTOP), then killed and restarted.
func TestCacheOutage(t *testing.T) {
	v, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	clk := &clock{t: time.Now()}
	client := v.Client(t, nil)
	client.SetMaxRetries(0)
	base := vaulttest.UniquePath(t)
	store, err := New(Config{Client: client, Path: base, LookupTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	cache, err := NewCache(store, CacheConfig{TTL: time.Minute, StaleFor: time.Hour, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	key, rec := issue(t, authz.KeySpec{Name: "cached before the outage"})
	other, otherRec := issue(t, authz.KeySpec{Name: "never looked up before the outage"})
	for _, r := range []authz.Record{rec, otherRec} {
		if err := store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := cache.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cache.Lookup(ctx, authz.HashKey(key)); err != nil {
		t.Fatal(err)
	}
	if !cache.Ready() {
		t.Fatal("not ready with Vault up")
	}
	clk.Advance(2 * time.Minute) // past the TTL: every lookup now asks Vault

	check := func(phase string) {
		t.Helper()
		r, err := cache.Lookup(ctx, authz.HashKey(key))
		if err != nil || r.ID != rec.ID {
			t.Fatalf("%s: cached key: %v", phase, err)
		}
		if _, err := cache.Lookup(ctx, authz.HashKey(other)); !errors.Is(err, authz.ErrStoreUnavailable) {
			t.Fatalf("%s: uncached key: %v, want unavailable", phase, err)
		}
	}
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	check("vault hung")
	if err := v.Resume(); err != nil {
		t.Fatal(err)
	}
	v.Kill()
	check("vault down")
	if st := cache.Stats(); st.StaleServes != 2 {
		t.Fatalf("stats %+v, want 2 stale serves", st)
	}
	clk.Advance(2 * time.Hour) // past the stale window
	if _, err := cache.Lookup(ctx, authz.HashKey(key)); !errors.Is(err, authz.ErrStoreUnavailable) {
		t.Fatalf("past the stale window: %v", err)
	}
	if cache.Ready() {
		t.Fatal("ready with Vault gone for longer than the stale window")
	}

	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []authz.Record{rec, otherRec} { // a dev server restarts empty
		if err := store.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := cache.Lookup(ctx, authz.HashKey(other)); err != nil || r.ID != otherRec.ID {
		t.Fatalf("after recovery: %v", err)
	}
	if !cache.Ready() {
		t.Fatal("not ready after recovery")
	}
}

// BenchmarkCacheHit measures a lookup answered from the cache: what every check of a
// known key costs once the first check has read it.
func BenchmarkCacheHit(b *testing.B) {
	fx := newCacheFixture(b, CacheConfig{TTL: time.Hour}, 0)
	key, rec := issue(b, authz.KeySpec{Name: "bench"})
	if err := fx.store.Create(context.Background(), rec); err != nil {
		b.Fatal(err)
	}
	h := authz.HashKey(key)
	ctx := context.Background()
	if _, err := fx.cache.Lookup(ctx, h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fx.cache.Lookup(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

package vaultstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

// TestCacheFairMissBudget: one source spraying invented keys spends its own share of
// the miss budget and is then refused early; another source's new valid keys are read
// throughout, with a clock that never moves (so no budget refills).
func TestCacheFairMissBudget(t *testing.T) {
	var mu sync.Mutex
	var suspected []string
	fx := newCacheFixture(t, CacheConfig{MissRate: 20, MissBurst: 40, SourceMissRate: 2, SourceMissBurst: 20,
		SprayFailures: 8, SprayWindow: time.Minute, OnSpraySuspected: func(src string, n int) {
			mu.Lock()
			suspected = append(suspected, src)
			mu.Unlock()
		}}, 0)
	ctx := context.Background()
	f, _ := authz.NewFormat("mgx-sk-")
	var keys []string
	for range 20 {
		k, _ := fx.create(t)
		keys = append(keys, k)
	}
	var throttled, refused, unknown, allowed int
	for i := range 1000 {
		spray, err := f.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fx.cache.LookupFrom(ctx, authz.HashKey(spray), authz.Source{Addr: "192.0.2.1"})
		var r *authz.SourceRefusedError
		switch {
		case errors.As(err, &r):
			refused++
			if r.RetryAfter <= 0 || r.RetryAfter > time.Minute {
				t.Fatalf("retry after %v", r.RetryAfter)
			}
		case errors.Is(err, authz.ErrLookupThrottled):
			throttled++
		case errors.Is(err, ErrKeyNotFound):
			unknown++
		default:
			t.Fatalf("spray lookup: %v", err)
		}
		if i%50 == 0 {
			if _, err := fx.cache.LookupFrom(ctx, authz.HashKey(keys[i/50]), authz.Source{Addr: "198.51.100.7"}); err != nil {
				t.Fatalf("another source's valid key during the spray: %v", err)
			} else {
				allowed++
			}
		}
	}
	t.Logf("spray of 1000 from one source: %d read (unknown), %d throttled, %d refused early; the other source: %d/20 valid keys allowed",
		unknown, throttled, refused, allowed)
	if unknown != 8 || refused != 1000-8 || throttled != 0 {
		t.Fatalf("the sprayer: %d reads, %d refused, %d throttled; want 8 reads then refusals", unknown, refused, throttled)
	}
	if len(suspected) != 1 || suspected[0] != "192.0.2.1" {
		t.Fatalf("suspected %v", suspected)
	}
	st := fx.cache.Stats()
	if st.SpraySuspected != 1 || st.SourceRefused != uint64(refused) {
		t.Fatalf("stats %+v", st)
	}
	// A cached valid key from the sprayer's own address still works: only reads are refused.
	if _, err := fx.cache.LookupFrom(ctx, authz.HashKey(keys[0]), authz.Source{Addr: "192.0.2.1"}); err != nil {
		t.Fatalf("a cached key from the suspected source: %v", err)
	}
	// The refusal ends with the window.
	fx.clock.Advance(time.Minute + time.Second)
	if _, err := fx.cache.LookupFrom(ctx, authz.HashKey(keys[19]), authz.Source{Addr: "192.0.2.1"}); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

// TestCacheSourceShare: with spray detection off, a source gets its burst and then is
// throttled, while the shared budget still serves another source.
func TestCacheSourceShare(t *testing.T) {
	fx := newCacheFixture(t, CacheConfig{MissRate: 20, MissBurst: 40, SourceMissRate: 2, SourceMissBurst: 10, SprayFailures: -1}, 0)
	ctx := context.Background()
	f, _ := authz.NewFormat("mgx-sk-")
	k, _ := fx.create(t)
	throttled := 0
	for range 100 {
		spray, _ := f.Generate(nil)
		if _, err := fx.cache.LookupFrom(ctx, authz.HashKey(spray), authz.Source{Addr: "192.0.2.1"}); errors.Is(err, authz.ErrLookupThrottled) {
			throttled++
		}
	}
	if throttled != 90 {
		t.Fatalf("%d of 100 throttled, want 90 (a burst of 10)", throttled)
	}
	if _, err := fx.cache.LookupFrom(ctx, authz.HashKey(k), authz.Source{Addr: "198.51.100.7"}); err != nil {
		t.Fatalf("another source: %v", err)
	}
	if st := fx.cache.Stats(); st.SourceThrottled != 90 || st.Throttled != 90 || st.SpraySuspected != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestConcurrentMissesShareOneUnit: 100 concurrent first lookups of one valid key from
// one client cost one Vault read and one unit of the client's share, so all 100 get the
// record (the client's share is far smaller than 100).
func TestConcurrentMissesShareOneUnit(t *testing.T) {
	// Record reads take 200 ms, so every lookup joins the first one's flight.
	fx := newCacheFixture(t, CacheConfig{MissRate: 100, MissBurst: 200, SourceMissRate: 1, SourceMissBurst: 2}, 200*time.Millisecond)
	key, _ := fx.create(t)
	before := fx.reads.Count()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	start := make(chan struct{})
	for range 100 {
		wg.Go(func() {
			<-start
			if _, err := fx.cache.LookupFrom(context.Background(), authz.HashKey(key), authz.Source{Addr: "192.0.2.9"}); err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a concurrent first lookup failed: %v", err)
	}
	if n := fx.reads.Count() - before; n != 1 {
		t.Fatalf("%d Vault reads for 100 concurrent lookups of one key, want 1", n)
	}
}

package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/redistest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var plans = map[string]Plan{
	"standard": {PerMinute: 60, Burst: 5},
	"team":     {PerMinute: 60, Burst: 5, OwnerPerMinute: 60, OwnerBurst: 2},
}

// backends returns each backend under test: in-process (with a frozen clock) and Redis.
func backends(t *testing.T) map[string]func() Backend {
	t.Helper()
	clk := &clock{t: time.Now()}
	local, err := NewLocal(0, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := redistest.Start(t)
	return map[string]func() Backend{
		"local": func() Backend { return local },
		"redis": func() Backend {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
			t.Cleanup(func() { rdb.Close() })
			return NewRedis(rdb, "test:")
		},
	}
}

func TestBurstThenRefuse(t *testing.T) {
	for name, mk := range backends(t) {
		t.Run(name, func(t *testing.T) {
			l, err := New(mk(), plans, "standard")
			if err != nil {
				t.Fatal(err)
			}
			rec := &authz.Record{ID: "key_" + name + "burst00000", Owner: "acct_1"}
			for i := range 5 {
				res, applied, err := l.Check(context.Background(), rec)
				if err != nil || !applied || !res.Allowed || res.Limit != 60 {
					t.Fatalf("request %d: %+v %v %v", i, res, applied, err)
				}
				if res.Remaining != 4-i {
					t.Fatalf("request %d: remaining %d, want %d", i, res.Remaining, 4-i)
				}
			}
			res, _, err := l.Check(context.Background(), rec)
			if err != nil || res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > time.Second+100*time.Millisecond {
				t.Fatalf("sixth request: %+v %v; want refused, retry within a second (60/min)", res, err)
			}
		})
	}
}

// TestRefusalCostsOtherLimitsNothing: the owner limit (burst 2) refuses the third
// request; the key's own limit (burst 5) must not have paid for it.
func TestRefusalCostsOtherLimitsNothing(t *testing.T) {
	for name, mk := range backends(t) {
		t.Run(name, func(t *testing.T) {
			b := mk()
			team, _ := New(b, plans, "")
			rec := &authz.Record{ID: "key_" + name + "owner00000", Owner: "acct_" + name, Plan: "team"}
			for i := range 6 {
				res, _, err := team.Check(context.Background(), rec)
				if err != nil || res.Allowed != (i < 2) {
					t.Fatalf("request %d: %+v %v", i, res, err)
				}
			}
			// Only the two allowed requests counted against the key's burst of 5.
			solo, _ := New(b, map[string]Plan{"standard": plans["standard"]}, "standard")
			rec.Plan = ""
			res, _, err := solo.Check(context.Background(), rec)
			if err != nil || !res.Allowed || res.Remaining != 2 {
				t.Fatalf("key budget after 4 refusals: %+v %v; want 2 left (5 - 2 allowed - this one)", res, err)
			}
		})
	}
}

func TestNoPlanNoLimit(t *testing.T) {
	local, _ := NewLocal(0, nil)
	l, err := New(local, plans, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, applied, err := l.Check(context.Background(), &authz.Record{ID: "key_x"}); applied || err != nil {
		t.Fatalf("a key without a plan was limited: %v %v", applied, err)
	}
	if _, err := New(local, plans, "gold"); err == nil {
		t.Fatal("an undefined default plan was accepted")
	}
}

func TestRedisSharedAcrossLimiters(t *testing.T) {
	srv := redistest.Start(t)
	var limiters []*Limiter
	for range 2 { // two replicas, each with its own client
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { rdb.Close() })
		l, _ := New(NewRedis(rdb, "keygate:"), plans, "standard")
		limiters = append(limiters, l)
	}
	rec := &authz.Record{ID: "key_shared0000000000"}
	allowed := 0
	for i := range 10 {
		if res, _, err := limiters[i%2].Check(context.Background(), rec); err != nil {
			t.Fatal(err)
		} else if res.Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("two replicas allowed %d of 10 requests, want the shared burst of 5", allowed)
	}
}

func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	l, _ := New(NewRedis(rdb, "keygate:"), plans, "standard")
	srv.Stop()
	if _, _, err := l.Check(context.Background(), &authz.Record{ID: "key_down"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Redis down: %v", err)
	}
}

// TestLocalAllowIsReservations: Allow, which takes tokens without reservations when
// every bucket has one, answers and counts exactly as reserving in every bucket (and
// cancelling all when one refuses) does, over a random run of keys, owners, repeated
// buckets and clock steps.
func TestLocalAllowIsReservations(t *testing.T) {
	clk := &clock{t: time.Now()}
	fast, err := NewLocal(0, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := NewLocal(0, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	reserveAll := func(l *Local, buckets []Bucket) Result {
		now := l.now()
		l.mu.Lock()
		defer l.mu.Unlock()
		var lims []*rate.Limiter
		for _, b := range buckets {
			lims = append(lims, l.bucket(b, now))
		}
		return l.reserve(buckets, lims, now)
	}
	keys := []Bucket{{"key:a", Limit{60, 3}}, {"key:b", Limit{120, 2}}}
	owners := []Bucket{{"owner:x", Limit{30, 4}}, {"owner:y", Limit{60, 1}}}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		k := keys[rng.IntN(len(keys))]
		var buckets []Bucket
		switch rng.IntN(4) {
		case 0:
			buckets = []Bucket{k}
		case 1:
			buckets = []Bucket{k, k}
		default:
			buckets = []Bucket{k, owners[rng.IntN(len(owners))]}
		}
		got, _ := fast.Allow(context.Background(), buckets)
		want := reserveAll(ref, buckets)
		if got != want {
			t.Fatalf("check %d of %v: %+v, want %+v", i, buckets, got, want)
		}
		clk.Advance(time.Duration(rng.IntN(1500)) * time.Millisecond)
	}
}

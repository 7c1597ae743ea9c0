package ratelimit

import (
	"context"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Local keeps buckets in this process: limits hold per replica.
type Local struct {
	mu      sync.Mutex
	buckets *lru.Cache[string, *rate.Limiter]
	now     func() time.Time
}

// NewLocal returns an in-process backend holding at most size buckets (0: 100,000);
// the least recently used bucket is dropped past that. now is the clock (nil: time.Now).
func NewLocal(size int, now func() time.Time) (*Local, error) {
	if size == 0 {
		size = 100_000
	}
	if now == nil {
		now = time.Now
	}
	c, err := lru.New[string, *rate.Limiter](size)
	if err != nil {
		return nil, err
	}
	return &Local{buckets: c, now: now}, nil
}

// Allow implements Backend: reservations in every bucket, all cancelled when one refuses.
func (l *Local) Allow(_ context.Context, buckets []Bucket) (Result, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var taken [2]*rate.Reservation
	reserved := taken[:0]
	for _, b := range buckets {
		lim := l.bucket(b, now)
		r := lim.ReserveN(now, 1)
		if delay := r.DelayFrom(now); !r.OK() || delay > 0 {
			r.CancelAt(now)
			for _, prev := range reserved {
				prev.CancelAt(now)
			}
			if !r.OK() {
				delay = time.Minute
			}
			return Result{Limit: b.Limit.PerMinute, RetryAfter: delay, ResetAfter: resetAfter(lim, now)}, nil
		}
		reserved = append(reserved, r)
	}
	lim := l.bucket(buckets[0], now)
	return Result{Allowed: true, Limit: buckets[0].Limit.PerMinute, Remaining: int(lim.TokensAt(now)),
		ResetAfter: resetAfter(lim, now)}, nil
}

// bucket returns the bucket's limiter, made or adjusted to its current limit.
func (l *Local) bucket(b Bucket, now time.Time) *rate.Limiter {
	r := rate.Limit(float64(b.Limit.PerMinute) / 60)
	lim, ok := l.buckets.Get(b.Key)
	if !ok {
		lim = rate.NewLimiter(r, b.Limit.Burst)
		l.buckets.Add(b.Key, lim)
		return lim
	}
	if lim.Limit() != r || lim.Burst() != b.Limit.Burst { // the plan changed
		lim.SetLimitAt(now, r)
		lim.SetBurstAt(now, b.Limit.Burst)
	}
	return lim
}

// resetAfter is how long until lim's bucket is full again.
func resetAfter(lim *rate.Limiter, now time.Time) time.Duration {
	missing := float64(lim.Burst()) - lim.TokensAt(now)
	if missing <= 0 || lim.Limit() <= 0 {
		return 0
	}
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}

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
// Under l.mu no other request changes the buckets, so when every bucket has a token
// now, taking one from each (AllowN) is what reserving them would do, without the
// reservations.
func (l *Local) Allow(_ context.Context, buckets []Bucket) (Result, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var held [2]*rate.Limiter // a key's bucket and its owner's
	lims := held[:0]
	all := true
	for _, b := range buckets {
		lim := l.bucket(b, now)
		lims = append(lims, lim)
		all = all && lim.TokensAt(now) >= 1
	}
	if !all || len(lims) == 2 && lims[0] == lims[1] { // one bucket twice needs two tokens
		return l.reserve(buckets, lims, now), nil
	}
	for _, lim := range lims {
		lim.AllowN(now, 1)
	}
	tokens := lims[0].TokensAt(now)
	return Result{Allowed: true, Limit: buckets[0].Limit.PerMinute, Remaining: int(tokens),
		ResetAfter: resetAfter(lims[0], tokens)}, nil
}

// reserve is Allow when a bucket may refuse: reservations in every bucket, all
// cancelled when one refuses.
func (l *Local) reserve(buckets []Bucket, lims []*rate.Limiter, now time.Time) Result {
	var taken [2]*rate.Reservation
	reserved := taken[:0]
	for i, b := range buckets {
		lim := lims[i]
		r := lim.ReserveN(now, 1)
		if delay := r.DelayFrom(now); !r.OK() || delay > 0 {
			r.CancelAt(now)
			for _, prev := range reserved {
				prev.CancelAt(now)
			}
			if !r.OK() {
				delay = time.Minute
			}
			return Result{Limit: b.Limit.PerMinute, RetryAfter: delay, ResetAfter: resetAfter(lim, lim.TokensAt(now))}
		}
		reserved = append(reserved, r)
	}
	tokens := lims[0].TokensAt(now)
	return Result{Allowed: true, Limit: buckets[0].Limit.PerMinute, Remaining: int(tokens),
		ResetAfter: resetAfter(lims[0], tokens)}
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

// resetAfter is how long until lim's bucket, holding tokens, is full again.
func resetAfter(lim *rate.Limiter, tokens float64) time.Duration {
	missing := float64(lim.Burst()) - tokens
	if missing <= 0 || lim.Limit() <= 0 {
		return 0
	}
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}

// Package ratelimit limits requests per key (and, where a plan says so, per owner),
// either in-process (one replica) or in Redis (a limit shared by every replica).
//
// Limits come from plans in the configuration: a key names its plan, or gets the
// default one. When several limits apply to a request, a request one of them refuses
// consumes none of the others' budget. The in-process limiter uses
// golang.org/x/time/rate; the Redis limiter uses go-redis/redis_rate (GCRA).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keygate/keygate/authz"
)

// ErrUnavailable means the shared limiter (Redis) could not answer.
var ErrUnavailable = errors.New("rate limiter unavailable")

// Plan is a rate-limit plan.
type Plan struct {
	PerMinute int `json:"per_minute"` // requests per minute per key; 0: no per-key limit
	Burst     int `json:"burst"`      // requests at once; 0: PerMinute/6, at least 1
	// OwnerPerMinute and OwnerBurst limit all keys of one owner together; 0: no limit.
	OwnerPerMinute int `json:"owner_per_minute"`
	OwnerBurst     int `json:"owner_burst"`
}

// Limit is one bucket's rate.
type Limit struct {
	PerMinute, Burst int
}

// Bucket is one limit applied to one subject ("key:<id>", "owner:<owner>").
type Bucket struct {
	Key   string
	Limit Limit
}

// Result is the outcome of one check, reported for the first bucket (the key's own
// limit) unless another bucket refused.
type Result struct {
	Allowed    bool
	Limit      int           // requests per minute of the reported bucket (X-RateLimit-Limit)
	Remaining  int           // requests left now (X-RateLimit-Remaining)
	ResetAfter time.Duration // until the bucket is full again (X-RateLimit-Reset)
	RetryAfter time.Duration // when refused: until a request would pass
}

// Backend checks buckets. Allow counts the request against every bucket, or against none
// of them when one refuses.
type Backend interface {
	Allow(ctx context.Context, buckets []Bucket) (Result, error)
}

// Limiter applies plans to keys.
type Limiter struct {
	backend     Backend
	plans       map[string]Plan
	defaultPlan string
}

// New returns a Limiter. defaultPlan, when not empty, must be one of plans; keys whose
// plan is empty or unknown get it. A key with no plan that applies is not limited.
func New(backend Backend, plans map[string]Plan, defaultPlan string) (*Limiter, error) {
	if _, ok := plans[defaultPlan]; defaultPlan != "" && !ok {
		return nil, fmt.Errorf("ratelimit: default plan %q is not defined", defaultPlan)
	}
	for name, p := range plans {
		if p.PerMinute < 0 || p.Burst < 0 || p.OwnerPerMinute < 0 || p.OwnerBurst < 0 {
			return nil, fmt.Errorf("ratelimit: plan %q has a negative setting", name)
		}
	}
	return &Limiter{backend: backend, plans: plans, defaultPlan: defaultPlan}, nil
}

// Check counts one request of the key rec. applied is false when no limit applies.
func (l *Limiter) Check(ctx context.Context, rec *authz.Record) (res Result, applied bool, err error) {
	p, ok := l.plans[rec.Plan]
	if !ok {
		if p, ok = l.plans[l.defaultPlan]; !ok {
			return Result{}, false, nil
		}
	}
	var held [2]Bucket
	buckets := held[:0]
	if p.PerMinute > 0 {
		buckets = append(buckets, Bucket{Key: "key:" + rec.ID, Limit: limit(p.PerMinute, p.Burst)})
	}
	if p.OwnerPerMinute > 0 && rec.Owner != "" {
		buckets = append(buckets, Bucket{Key: "owner:" + rec.Owner, Limit: limit(p.OwnerPerMinute, p.OwnerBurst)})
	}
	if len(buckets) == 0 {
		return Result{}, false, nil
	}
	if local, ok := l.backend.(*Local); ok {
		res, err = local.Allow(ctx, buckets) // a direct call: buckets stay on the stack
	} else {
		res, err = l.backend.Allow(ctx, slices.Clone(buckets))
	}
	return res, true, err
}

func limit(perMinute, burst int) Limit {
	if burst <= 0 {
		burst = max(1, perMinute/6)
	}
	return Limit{PerMinute: perMinute, Burst: burst}
}

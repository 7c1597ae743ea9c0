package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Redis keeps buckets in Redis: one limit holds across every replica sharing it.
type Redis struct {
	limiter *redis_rate.Limiter
	prefix  string
	tracer  trace.Tracer
	reload  func(context.Context) // Redis Cluster: re-read the slot map
}

// NewRedis returns a Redis backend; bucket keys get prefix (such as "keygate:"). rdb
// is one server, a Sentinel failover client or a Redis Cluster client.
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	r := &Redis{limiter: redis_rate.NewLimiter(rdb), prefix: prefix, tracer: otel.Tracer("github.com/keygate/keygate/ratelimit")}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		// A cluster client re-reads the slot map every 10 s, or when a node answers
		// MOVED. A failed master answers nothing, so after a failed call the map is
		// re-read at once (go-redis runs at most one reload per 200 ms): a replica's
		// promotion is followed within a reload, not ten seconds.
		r.reload = cc.ReloadState
	}
	return r
}

// unavailable wraps a Redis error and, for Redis Cluster, asks for a new slot map.
func (r *Redis) unavailable(ctx context.Context, err error) error {
	if r.reload != nil {
		r.reload(ctx)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Allow implements Backend. With one bucket it is one atomic Redis call. With several,
// it first reads them all without counting, refusing without cost when one is spent,
// then counts the request in each; if a concurrent request spends a bucket in between,
// the counts already made are given back.
func (r *Redis) Allow(ctx context.Context, buckets []Bucket) (res Result, err error) {
	ctx, span := r.tracer.Start(ctx, "redis.ratelimit", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.Int("ratelimit.buckets", len(buckets))))
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, "redis unavailable")
		}
		span.End()
	}()
	limits := make([]redis_rate.Limit, len(buckets))
	for i, b := range buckets {
		limits[i] = redis_rate.Limit{Rate: b.Limit.PerMinute, Burst: b.Limit.Burst, Period: time.Minute}
	}
	if len(buckets) > 1 {
		for i, b := range buckets {
			res, err := r.limiter.AllowN(ctx, r.prefix+b.Key, limits[i], 0)
			if err != nil {
				return Result{}, r.unavailable(ctx, err)
			}
			if res.Remaining < 1 {
				return Result{Limit: b.Limit.PerMinute, RetryAfter: time.Minute / time.Duration(b.Limit.PerMinute),
					ResetAfter: res.ResetAfter}, nil
			}
		}
	}
	var first Result
	for i, b := range buckets {
		res, err := r.limiter.AllowN(ctx, r.prefix+b.Key, limits[i], 1)
		if err != nil {
			r.refund(ctx, buckets[:i], limits)
			return Result{}, r.unavailable(ctx, err)
		}
		if res.Allowed == 0 {
			r.refund(ctx, buckets[:i], limits)
			return Result{Limit: b.Limit.PerMinute, RetryAfter: res.RetryAfter, ResetAfter: res.ResetAfter}, nil
		}
		if i == 0 {
			first = Result{Allowed: true, Limit: b.Limit.PerMinute, Remaining: res.Remaining, ResetAfter: res.ResetAfter}
		}
	}
	return first, nil
}

// refund gives back one request to each bucket (a negative cost moves GCRA's clock back).
func (r *Redis) refund(ctx context.Context, buckets []Bucket, limits []redis_rate.Limit) {
	for i, b := range buckets {
		_, _ = r.limiter.AllowN(context.WithoutCancel(ctx), r.prefix+b.Key, limits[i], -1)
	}
}

package usage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/usage"
)

// flaky writes through to a real store, failing as told: before the write (the
// transaction never happened) or after it (the commit happened, its answer was lost).
type flaky struct {
	usage.Writer
	mu          sync.Mutex
	failBefore  int
	failAfter   int
	writes      int
	lastBatches []string
}

var errLost = errors.New("connection lost")

func (f *flaky) Write(ctx context.Context, b []usage.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	f.lastBatches = f.lastBatches[:0]
	for _, x := range b {
		f.lastBatches = append(f.lastBatches, x.ID)
	}
	if f.failBefore > 0 {
		f.failBefore--
		return errLost
	}
	err := f.Writer.Write(ctx, b)
	if err == nil && f.failAfter > 0 {
		f.failAfter--
		return errLost
	}
	return err
}

func sqlite(t *testing.T) *usage.SQLStore {
	s, err := usage.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var (
	chat   = &authz.Route{Name: "chat", Models: true}
	images = &authz.Route{Name: "images"}
	keyA   = authz.Record{ID: "key_a", Owner: "acme"}
)

func decision(rec authz.Record, route *authz.Route, model string, r authz.Reason) *authz.Decision {
	return &authz.Decision{Record: rec, Route: route, Model: model, Reason: r}
}

func TestAggregatorCounts(t *testing.T) {
	ctx := context.Background()
	s := sqlite(t)
	a, err := usage.NewAggregator(s, usage.Options{ReplicaID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	at := t0.Add(30 * time.Second)
	for range 3 {
		a.Count(decision(keyA, chat, "gpt-4o", authz.ReasonAllowed), at)
	}
	a.Count(decision(keyA, chat, "o1", authz.ReasonModelNotAllowed), at)
	a.Count(decision(keyA, images, "", authz.ReasonAllowed), at.Add(time.Minute))
	a.Count(decision(authz.Record{}, chat, "", authz.ReasonUnknownKey), at)
	a.Count(decision(authz.Record{}, nil, "", authz.ReasonMissing), at)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil { // nothing new: no batch
		t.Fatal(err)
	}
	q := usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour), Step: usage.StepMinute, By: usage.DimOutcome}
	equal(t, "by outcome", query(t, s, q), map[string]int64{"10:00 allowed": 3, "10:00 model_not_allowed": 1, "10:01 allowed": 1})
	q.By = usage.DimModel
	equal(t, "by model", query(t, s, q), map[string]int64{"10:00 gpt-4o": 3, "10:00 o1": 1, "10:01 ": 1})
	equal(t, "unattributed", query(t, s, usage.Query{Owner: "", From: t0, To: t0.Add(time.Hour), Step: usage.StepHour,
		By: usage.DimOutcome}), map[string]int64{"10:00 missing_key": 1, "10:00 unknown_key": 1})
}

func TestAggregatorRetries(t *testing.T) {
	for name, tc := range map[string]struct{ before, after int }{
		"fails before writing":         {before: 2},
		"commits but reports failure":  {after: 2},
		"both, one after the other":    {before: 1, after: 1},
		"succeeds at once (reference)": {},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := sqlite(t)
			w := &flaky{Writer: s, failBefore: tc.before, failAfter: tc.after}
			a, err := usage.NewAggregator(w, usage.Options{ReplicaID: "r1"})
			if err != nil {
				t.Fatal(err)
			}
			failures := 0
			for i := range 4 {
				a.Count(decision(keyA, chat, "m", authz.ReasonAllowed), t0.Add(time.Duration(i)*time.Minute))
				if err := a.Flush(ctx); err != nil {
					failures++
				}
			}
			if failures != tc.before+tc.after || a.Pending() != 0 {
				t.Fatalf("failures %d (want %d), pending %d", failures, tc.before+tc.after, a.Pending())
			}
			equal(t, "each minute counted once", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour),
				Step: usage.StepMinute}), map[string]int64{"10:00 ": 1, "10:01 ": 1, "10:02 ": 1, "10:03 ": 1})
		})
	}
}

func TestAggregatorBounds(t *testing.T) {
	ctx := context.Background()
	t.Run("cells", func(t *testing.T) {
		s := sqlite(t)
		a, err := usage.NewAggregator(s, usage.Options{MaxCells: 32}) // one cell per shard
		if err != nil {
			t.Fatal(err)
		}
		// The same key, route and outcome: one shard. The first model takes its one
		// cell; every other model is dropped, the first still counts.
		for i := range 100 {
			a.Count(decision(keyA, chat, fmt.Sprintf("model-%d", i), authz.ReasonAllowed), t0)
			a.Count(decision(keyA, chat, "model-0", authz.ReasonAllowed), t0)
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		equal(t, "bounded", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour),
			Step: usage.StepMinute, By: usage.DimModel}), map[string]int64{"10:00 model-0": 101})
	})
	t.Run("pending", func(t *testing.T) {
		s := sqlite(t)
		w := &flaky{Writer: s, failBefore: 5}
		a, err := usage.NewAggregator(w, usage.Options{MaxPending: 2, ReplicaID: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			a.Count(decision(keyA, chat, "m", authz.ReasonAllowed), t0.Add(time.Duration(i)*time.Minute))
			_ = a.Flush(ctx)
			if a.Pending() > 2 {
				t.Fatalf("%d batches pending, bound 2", a.Pending())
			}
		}
		// The sixth flush wrote the two newest batches: minutes 4 and 5.
		if fmt.Sprint(w.lastBatches) != "[r1-5 r1-6]" {
			t.Errorf("last write %v", w.lastBatches)
		}
		equal(t, "newest kept", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour),
			Step: usage.StepMinute}), map[string]int64{"10:04 ": 1, "10:05 ": 1})
	})
}

func TestAggregatorConcurrent(t *testing.T) {
	ctx := context.Background()
	s := sqlite(t)
	a, err := usage.NewAggregator(s, usage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := []authz.Record{keyA, {ID: "key_b", Owner: "acme"}, {}}
	var wg sync.WaitGroup
	const workers, per = 8, 2000
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				a.Count(decision(keys[(w+i)%3], chat, "m", authz.ReasonAllowed), t0)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for flushing := true; flushing; {
		select {
		case <-done:
			flushing = false
		default:
		}
		if err := a.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := s.Query(ctx, usage.Query{All: true, From: t0, To: t0.Add(time.Hour), Step: usage.StepHour})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 1 || pts[0].Count != workers*per {
		t.Fatalf("got %v, want one point of %d", pts, workers*per)
	}
}

func TestAggregatorOptions(t *testing.T) {
	for name, o := range map[string]usage.Options{
		"flush too short":             {Flush: time.Millisecond},
		"flush too long":              {Flush: 2 * time.Hour},
		"rollup too soon":             {RollupAfter: time.Minute},
		"retention before the rollup": {RollupAfter: 72 * time.Hour, Retention: 48 * time.Hour},
		"negative bound":              {MaxCells: -1},
	} {
		if _, err := usage.NewAggregator(nil, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// BenchmarkCount measures the check path's cost: an existing cell (the steady state)
// and a new cell per call.
func BenchmarkCount(b *testing.B) {
	a, err := usage.NewAggregator(nil, usage.Options{MaxCells: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	d := decision(keyA, chat, "gpt-4o", authz.ReasonAllowed)
	at := t0
	b.Run("existing", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			a.Count(d, at)
		}
	})
	b.Run("existing-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a.Count(d, at)
			}
		})
	})
	b.Run("parallel-many-keys", func(b *testing.B) {
		ds := make([]*authz.Decision, 1024)
		for i := range ds {
			ds[i] = decision(authz.Record{ID: fmt.Sprintf("key_%d", i), Owner: "acme"}, chat, "gpt-4o", authz.ReasonAllowed)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				a.Count(ds[i%len(ds)], at)
				i++
			}
		})
	})
}

// TestAggregatorRunFlushesOnStop: counts made before the context ends are written by
// Run's last flush, long before the flush interval.
func TestAggregatorRunFlushesOnStop(t *testing.T) {
	s := sqlite(t)
	a, err := usage.NewAggregator(s, usage.Options{Flush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	a.Count(decision(keyA, chat, "m", authz.ReasonAllowed), t0)
	a.Count(decision(keyA, chat, "m", authz.ReasonRateLimited), t0)
	cancel()
	<-done
	equal(t, "after stop", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour), Step: usage.StepMinute,
		By: usage.DimOutcome}), map[string]int64{"10:00 allowed": 1, "10:00 rate_limited": 1})
}

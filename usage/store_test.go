package usage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgtest"
	"github.com/keygate/keygate/usage"
)

// stores runs f against SQLite and against a real PostgreSQL. open returns a new
// connection to the same database each time it is called, as another replica would.
func stores(t *testing.T, f func(t *testing.T, open func() *usage.SQLStore)) {
	t.Run("sqlite", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "data", "usage.db")
		f(t, func() *usage.SQLStore {
			s, err := usage.OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
	t.Run("postgres", func(t *testing.T) {
		pg := pgtest.Start(t)
		f(t, func() *usage.SQLStore {
			s, err := usage.OpenPostgres(context.Background(), pg.DSN())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		})
	})
}

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

func cell(min int, key, route, model, outcome string) usage.Cell {
	owner := ""
	if key != "" {
		owner = "owner-of-" + key
	}
	return usage.Cell{Minute: t0.Add(time.Duration(min) * time.Minute).Unix(), KeyID: key, Owner: owner,
		Route: route, Model: model, Outcome: outcome}
}

func query(t *testing.T, s *usage.SQLStore, q usage.Query) map[string]int64 {
	t.Helper()
	pts, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, p := range pts {
		out[p.Time.Format("15:04")+" "+p.Group] = p.Count
	}
	return out
}

func equal(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got %v\nwant %v", what, got, want)
	}
}

func TestStoreWriteQuery(t *testing.T) {
	stores(t, func(t *testing.T, open func() *usage.SQLStore) {
		ctx := context.Background()
		s := open()
		b1 := usage.Batch{ID: "r1-1", Counts: map[usage.Cell]int64{
			cell(0, "key_a", "chat", "gpt-4o", "allowed"):           5,
			cell(0, "key_a", "chat", "gpt-4o", "model_not_allowed"): 1,
			cell(1, "key_a", "images", "", "allowed"):               2,
			cell(1, "key_b", "chat", "mini", "allowed"):             7,
			cell(1, "", "", "", "unknown_key"):                      3,
		}}
		b2 := usage.Batch{ID: "r2-1", Counts: map[usage.Cell]int64{
			cell(0, "key_a", "chat", "gpt-4o", "allowed"): 10,
		}}
		if err := s.Write(ctx, []usage.Batch{b1}); err != nil {
			t.Fatal(err)
		}
		// b1 again (a commit reported failed that happened) with a new batch: only the
		// new one counts.
		if err := open().Write(ctx, []usage.Batch{b1, b2}); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, []usage.Batch{b2}); err != nil {
			t.Fatal(err)
		}
		q := usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour), Step: usage.StepMinute}
		for by, want := range map[usage.Dimension]map[string]int64{
			usage.DimRoute:   {"10:00 chat": 16, "10:01 images": 2},
			usage.DimModel:   {"10:00 gpt-4o": 16, "10:01 ": 2},
			usage.DimOutcome: {"10:00 allowed": 15, "10:00 model_not_allowed": 1, "10:01 allowed": 2},
			usage.DimNone:    {"10:00 ": 16, "10:01 ": 2},
		} {
			q.By = by
			equal(t, "key_a by "+string(by), query(t, s, q), want)
		}
		equal(t, "owner of key_b", query(t, s, usage.Query{Owner: "owner-of-key_b", From: t0, To: t0.Add(time.Hour),
			Step: usage.StepHour, By: usage.DimKey}), map[string]int64{"10:00 key_b": 7})
		equal(t, "everyone by outcome", query(t, s, usage.Query{All: true, From: t0, To: t0.Add(24 * time.Hour),
			Step: usage.StepDay, By: usage.DimOutcome}),
			map[string]int64{"00:00 allowed": 24, "00:00 model_not_allowed": 1, "00:00 unknown_key": 3})
		equal(t, "another owner sees nothing of key_a", query(t, s, usage.Query{Owner: "owner-of-key_b", From: t0,
			To: t0.Add(time.Hour), Step: usage.StepMinute, By: usage.DimRoute}), map[string]int64{"10:01 chat": 7})
		equal(t, "the range excludes its end", query(t, s, usage.Query{KeyID: "key_a", From: t0,
			To: t0.Add(time.Minute), Step: usage.StepMinute}), map[string]int64{"10:00 ": 16})
	})
}

func TestStoreConcurrentReplicas(t *testing.T) {
	stores(t, func(t *testing.T, open func() *usage.SQLStore) {
		ctx := context.Background()
		const replicas, flushes = 4, 10
		var wg sync.WaitGroup
		errs := make(chan error, replicas*flushes)
		for r := range replicas {
			s := open()
			wg.Go(func() {
				for f := range flushes {
					b := usage.Batch{ID: fmt.Sprintf("r%d-%d", r, f), Counts: map[usage.Cell]int64{
						cell(0, "key_a", "chat", "m", "allowed"): 1, cell(f%3, "key_b", "chat", "m", "allowed"): 2,
					}}
					errs <- s.Write(ctx, []usage.Batch{b})
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		equal(t, "sum of every replica", query(t, open(), usage.Query{All: true, From: t0, To: t0.Add(time.Hour),
			Step: usage.StepHour, By: usage.DimKey}), map[string]int64{"10:00 key_a": 40, "10:00 key_b": 80})
	})
}

func TestStoreRollupRetention(t *testing.T) {
	stores(t, func(t *testing.T, open func() *usage.SQLStore) {
		ctx := context.Background()
		s := open()
		counts := map[usage.Cell]int64{}
		for m := range 130 { // 10:00 to 12:09
			counts[cell(m, "key_a", "chat", "m", "allowed")] = 1
		}
		if err := s.Write(ctx, []usage.Batch{{ID: "r-1", Counts: counts}}); err != nil {
			t.Fatal(err)
		}
		hours := usage.Query{KeyID: "key_a", From: t0, To: t0.Add(3 * time.Hour), Step: usage.StepHour}
		wantHours := map[string]int64{"10:00 ": 60, "11:00 ": 60, "12:00 ": 10}
		equal(t, "hours before the rollup", query(t, s, hours), wantHours)

		// Rolled up after 48h: at 12:30 two days later, 10:00 and 11:00 are older.
		now := t0.Add(48*time.Hour + 2*time.Hour + 30*time.Minute)
		for range 2 { // twice: the second finds nothing more to do
			if err := s.Maintain(ctx, now, 48*time.Hour, 90*24*time.Hour); err != nil {
				t.Fatal(err)
			}
		}
		equal(t, "hours after the rollup", query(t, s, hours), wantHours)
		equal(t, "days after the rollup", query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(time.Hour),
			Step: usage.StepDay}), map[string]int64{"00:00 ": 130})
		minutes := query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(3 * time.Hour), Step: usage.StepMinute})
		if len(minutes) != 10 || minutes["12:00 "] != 1 {
			t.Errorf("minutes after the rollup: want only 12:00 to 12:09, got %v", minutes)
		}
		// A late flush into a rolled-up hour adds to it at the next rollup.
		if err := s.Write(ctx, []usage.Batch{{ID: "r-2", Counts: map[usage.Cell]int64{cell(5, "key_a", "chat", "m", "allowed"): 4}}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Maintain(ctx, now, 48*time.Hour, 90*24*time.Hour); err != nil {
			t.Fatal(err)
		}
		equal(t, "hours after a late flush", query(t, s, hours), map[string]int64{"10:00 ": 64, "11:00 ": 60, "12:00 ": 10})

		// Retention: 91 days later everything is gone.
		if err := s.Maintain(ctx, t0.Add(91*24*time.Hour), 48*time.Hour, 90*24*time.Hour); err != nil {
			t.Fatal(err)
		}
		equal(t, "after the retention", query(t, s, hours), map[string]int64{})
	})
}

func TestQueryBounds(t *testing.T) {
	for name, tc := range map[string]struct {
		q    usage.Query
		want error
	}{
		"bad step":              {usage.Query{From: t0, To: t0.Add(time.Hour), Step: "week"}, usage.ErrInvalidQuery},
		"bad dimension":         {usage.Query{From: t0, To: t0.Add(time.Hour), Step: usage.StepHour, By: "key_hash"}, usage.ErrInvalidQuery},
		"empty range":           {usage.Query{From: t0, To: t0, Step: usage.StepHour}, usage.ErrInvalidQuery},
		"reversed range":        {usage.Query{From: t0, To: t0.Add(-time.Hour), Step: usage.StepHour}, usage.ErrInvalidQuery},
		"no from":               {usage.Query{To: t0, Step: usage.StepHour}, usage.ErrInvalidQuery},
		"a day and a minute":    {usage.Query{From: t0, To: t0.Add(24*time.Hour + time.Minute), Step: usage.StepMinute}, usage.ErrTooManyPoints},
		"a century of days":     {usage.Query{From: t0, To: t0.AddDate(100, 0, 0), Step: usage.StepDay}, usage.ErrTooManyPoints},
		"a day of minutes":      {usage.Query{From: t0, To: t0.Add(24 * time.Hour), Step: usage.StepMinute}, nil},
		"sixty days of hours":   {usage.Query{From: t0, To: t0.Add(60 * 24 * time.Hour), Step: usage.StepHour}, nil},
		"unaligned within step": {usage.Query{From: t0.Add(time.Second), To: t0.Add(2 * time.Second), Step: usage.StepDay}, nil},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tc.q.Normalize()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestStoreMaintainWhileWriting runs rollups beside replicas that keep writing into
// minutes being rolled up: a rollup or a write may fail (and is retried, as the
// aggregator retries), but no count is lost or counted twice.
func TestStoreMaintainWhileWriting(t *testing.T) {
	stores(t, func(t *testing.T, open func() *usage.SQLStore) {
		ctx := context.Background()
		now := t0.Add(72 * time.Hour) // every minute written is past the rollup age
		const replicas, flushes = 3, 15
		var wg sync.WaitGroup
		stop := make(chan struct{})
		var want int64
		var mu sync.Mutex
		var retries, rollups, failedRollups atomic.Int64
		for r := range replicas {
			s := open()
			wg.Go(func() {
				for f := range flushes {
					b := usage.Batch{ID: fmt.Sprintf("r%d-%d", r, f), Counts: map[usage.Cell]int64{}}
					for m := range 5 {
						b.Counts[cell((f+m)%90, "key_a", "chat", "m", "allowed")] = int64(m + 1)
					}
					for try := 0; s.Write(ctx, []usage.Batch{b}) != nil; try++ { // a deadlock victim: the same batch again
						retries.Add(1)
						if try == 100 {
							t.Error("a write failed 100 times")
							return
						}
					}
					mu.Lock()
					want += 15
					mu.Unlock()
				}
			})
		}
		var maint sync.WaitGroup
		for range 2 {
			s := open()
			maint.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					if s.Maintain(ctx, now, 48*time.Hour, 90*24*time.Hour) == nil {
						rollups.Add(1)
					} else {
						failedRollups.Add(1)
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		maint.Wait()
		t.Logf("%d rollups beside the writes, %d failed; %d writes retried", rollups.Load(), failedRollups.Load(), retries.Load())
		s := open()
		if err := s.Maintain(ctx, now, 48*time.Hour, 90*24*time.Hour); err != nil {
			t.Fatal(err)
		}
		pts, err := s.Query(ctx, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(24 * time.Hour), Step: usage.StepDay})
		if err != nil {
			t.Fatal(err)
		}
		if len(pts) != 1 || pts[0].Count != want {
			t.Fatalf("got %v, want one day of %d", pts, want)
		}
		if m := query(t, s, usage.Query{KeyID: "key_a", From: t0, To: t0.Add(3 * time.Hour), Step: usage.StepMinute}); len(m) != 0 {
			t.Errorf("minute rows left after the last rollup: %v", m)
		}
	})
}

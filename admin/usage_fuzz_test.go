package admin

import (
	"testing"
	"time"

	"github.com/keygate/keygate/usage"
)

// FuzzUsageQuery feeds query strings to the usage routes' parser: it never panics, and
// what it accepts is a bounded, valid query.
func FuzzUsageQuery(f *testing.F) {
	for _, s := range []string{"", "from=2026-11-24T10:00:00Z&to=2026-11-24T11:00:00Z&step=minute&by=route",
		"by=key&owner=acct_a", "step=day&from=0001-01-01T00:00:00Z", "by=route&by=model", "from=%zz",
		"to=9999-12-31T23:59:59Z&step=minute", "from=2026-11-24T10:00:00%2B14:00", "owner=%00&by=outcome"} {
		f.Add(s, true)
	}
	now := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	a := &api{Config{Now: func() time.Time { return now }}}
	f.Fuzz(func(t *testing.T, raw string, owner bool) {
		q, bad := a.usageQuery(raw, owner)
		if bad != nil {
			if bad.status != 400 {
				t.Fatalf("status %d", bad.status)
			}
			return
		}
		step := q.Step.Duration()
		if step == 0 || !q.From.Before(q.To) || q.To.Sub(q.From)/step > usage.MaxSteps ||
			!q.From.Equal(q.From.Truncate(step)) || !q.To.Equal(q.To.Truncate(step)) {
			t.Fatalf("accepted %+v", q)
		}
		if q.By == usage.DimKey && !owner {
			t.Fatal("by=key accepted on a key")
		}
	})
}

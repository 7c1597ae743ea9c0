package vaultstore

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
)

func TestUsageBatches(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	_, a := createSpec(t, s, authz.KeySpec{Name: "a", Owner: "acct_1"})
	_, b := createSpec(t, s, authz.KeySpec{Name: "b", Owner: "acct_1"})
	if at, err := s.LastUsed(ctx, a.ID); err != nil || !at.IsZero() {
		t.Fatalf("never used: %v %v", at, err)
	}

	// Two replicas see uses; 1,000 uses make one write per key per flush.
	var writes *vaulttest.Counter
	client := vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
		writes = &vaulttest.Counter{Next: next, Contains: "/usage/", Method: http.MethodPut}
		return writes
	})
	counted, err := New(Config{Client: client, Path: s.base})
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := counted.NewUsage(), counted.NewUsage()
	t0 := time.Date(2025, 7, 14, 12, 0, 0, 0, time.UTC)
	for i := range 1000 {
		r1.Seen(a.ID, t0.Add(time.Duration(i)*time.Millisecond))
	}
	r1.Seen(b.ID, t0)
	r2.Seen(a.ID, t0.Add(-time.Hour)) // older than what r1 saw
	if err := r1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if writes.Count() != 2 {
		t.Fatalf("%d Vault writes for 1,002 uses on two keys, want 2", writes.Count())
	}
	if at, _ := s.LastUsed(ctx, a.ID); !at.Equal(t0) {
		t.Fatalf("last use of a: %v, want %v (the later replica must not move it back)", at, t0)
	}
	if err := r1.Flush(ctx); err != nil || writes.Count() != 2 {
		t.Fatalf("an empty flush wrote: %v, %d writes", err, writes.Count())
	}
}

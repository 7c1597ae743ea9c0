package vaultstore

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

// TestListOwner lists one owner's keys, first from records made before the owner index
// (which it indexes), then from the index alone, and counts the Vault requests.
func TestListOwner(t *testing.T) {
	ctx := context.Background()
	s, base := newStore(t, nil)
	made := map[string][]authz.Record{}
	for i, owner := range []string{"acct_a", "acct_b", "acct_b", "acct_a", "acct_b", "acct_b", "acct_b"} {
		_, rec := issue(t, authz.KeySpec{Name: "k" + string(rune('0'+i)), Owner: owner})
		rec.CreatedAt = rec.CreatedAt.Add(time.Duration(i) * time.Second)
		if err := s.Create(ctx, rec); err != nil {
			t.Fatal(err)
		}
		made[owner] = append(made[owner], rec)
	}
	// Records older than the index have no entries.
	for _, owner := range []string{"acct_a", "acct_b"} {
		for _, r := range made[owner] {
			if err := s.kv.DeleteMetadata(ctx, s.ownerPath(owner, r.ID)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := func(recs []authz.Record) string {
		var out []string
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return strings.Join(out, ",")
	}
	got, err := s.ListOwner(ctx, "acct_a")
	if err != nil || ids(got) != ids(made["acct_a"]) {
		t.Fatalf("before the index: %s %v, want %s", ids(got), err, ids(made["acct_a"]))
	}
	if !s.ownersIndexed.Load() {
		t.Fatal("the backfill did not complete the index")
	}

	// A fresh replica: one marker read, one list, two reads per key of the owner.
	var mu sync.Mutex
	var paths []string
	counted, err := New(Config{Client: vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			mu.Lock()
			paths = append(paths, r.Method+" "+r.URL.Path)
			mu.Unlock()
			return next.RoundTrip(r)
		})
	}), Path: base})
	if err != nil {
		t.Fatal(err)
	}
	got, err = counted.ListOwner(ctx, "acct_a")
	if err != nil || ids(got) != ids(made["acct_a"]) {
		t.Fatalf("from the index: %s %v", ids(got), err)
	}
	if len(paths) != 2+2*len(made["acct_a"]) {
		t.Fatalf("%d Vault requests for 2 keys:\n%s", len(paths), strings.Join(paths, "\n"))
	}
	for _, r := range made["acct_b"] {
		for _, p := range paths {
			if strings.Contains(p, r.Hash.String()) || strings.Contains(p, r.ID) {
				t.Fatalf("acct_a's listing read acct_b's %s", p)
			}
		}
	}
	paths = nil
	if _, err := counted.ListOwner(ctx, "acct_a"); err != nil || len(paths) != 1+2*len(made["acct_a"]) {
		t.Fatalf("the marker is read again: %d requests, %v", len(paths), err)
	}

	// New keys and rotations are indexed as they are written.
	mgx, _ := authz.NewFormat("mgx-sk-")
	rot, err := s.Rotate(ctx, mgx, made["acct_a"][0].ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := counted.ListOwner(ctx, "acct_a"); err != nil || len(got) != 3 || !strings.Contains(ids(got), rot.New.ID) {
		t.Fatalf("after a rotation: %s %v", ids(got), err)
	}
	if got, err := counted.ListOwner(ctx, "acct_nobody"); err != nil || len(got) != 0 {
		t.Fatalf("an owner without keys: %s %v", ids(got), err)
	}
}

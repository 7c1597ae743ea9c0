package vaultstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

var mgx = func() authz.Format { f, _ := authz.NewFormat("mgx-sk-"); return f }()

func createSpec(t *testing.T, s *Store, spec authz.KeySpec) (string, authz.Record) {
	t.Helper()
	key, rec, err := mgx.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key, rec
}

// decide checks key with an engine over s whose clock reads at.
func decide(t *testing.T, s *Store, key string, at time.Time) authz.Reason {
	t.Helper()
	e, err := authz.New(authz.Config{Format: mgx, Lookup: s, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Check(context.Background(), &authz.Request{APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return d.Reason
}

func TestRotateWithGrace(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	now := time.Now()
	oldKey, old := createSpec(t, s, authz.KeySpec{Name: "Production App", Owner: "acct_1", Scopes: []string{"chat:completions"}, ExpiresAt: now.Add(90 * 24 * time.Hour)})
	rot, err := s.Rotate(ctx, mgx, old.ID, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n := rot.New
	if n.ID == old.ID || n.Name != old.Name || n.Owner != old.Owner || strings.Join(n.Scopes, ",") != "chat:completions" || n.Kind != authz.KindProduct {
		t.Fatalf("new record %+v", n)
	}
	if life := n.ExpiresAt.Sub(n.CreatedAt); life != 90*24*time.Hour {
		t.Fatalf("new key's lifetime %v, want the old one's 90 days", life)
	}
	if !mgx.Valid(rot.Key) || authz.HashKey(rot.Key) != n.Hash {
		t.Fatal("the rotation returned a key that does not match its record")
	}
	if rot.Old.ReplacedBy != n.ID {
		t.Fatalf("old record not marked replaced: %+v", rot.Old)
	}
	if grace := rot.Old.ExpiresAt.Sub(now); grace < 30*24*time.Hour-time.Minute || grace > 30*24*time.Hour+time.Minute {
		t.Fatalf("old key expires %v from now, want 30 days", grace)
	}
	for _, tc := range []struct {
		at       time.Time
		old, new authz.Reason
	}{
		{now.Add(time.Minute), authz.ReasonAllowed, authz.ReasonAllowed},
		{now.Add(29 * 24 * time.Hour), authz.ReasonAllowed, authz.ReasonAllowed},
		{now.Add(30*24*time.Hour + time.Minute), authz.ReasonExpired, authz.ReasonAllowed},
	} {
		if got := decide(t, s, oldKey, tc.at); got != tc.old {
			t.Errorf("old key at +%v: %v, want %v", tc.at.Sub(now).Round(time.Hour), got, tc.old)
		}
		if got := decide(t, s, rot.Key, tc.at); got != tc.new {
			t.Errorf("new key at +%v: %v, want %v", tc.at.Sub(now).Round(time.Hour), got, tc.new)
		}
	}
	if st := rot.Old.StatusAt(now.Add(time.Minute)); st != authz.StatusRotating {
		t.Fatalf("old key status %v during the grace, want rotating", st)
	}
	// The old key cannot be rotated again; the new one can.
	if _, err := s.Rotate(ctx, mgx, old.ID, time.Hour); !errors.Is(err, ErrAlreadyRotated) {
		t.Fatalf("second rotation of the old key: %v", err)
	}
	if _, err := s.Rotate(ctx, mgx, n.ID, time.Hour); err != nil {
		t.Fatalf("rotation of the new key: %v", err)
	}
}

func TestRotateGraceZeroRevokes(t *testing.T) {
	s, _ := newStore(t, nil)
	oldKey, old := createSpec(t, s, authz.KeySpec{Name: "ci", Owner: "acct_1"})
	rot, err := s.Rotate(context.Background(), mgx, old.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Old.RevokedAt.IsZero() {
		t.Fatal("grace 0 did not revoke the old key")
	}
	if got := decide(t, s, oldKey, time.Now()); got != authz.ReasonRevoked {
		t.Fatalf("old key after --grace 0: %v", got)
	}
	if got := decide(t, s, rot.Key, time.Now()); got != authz.ReasonAllowed {
		t.Fatalf("new key: %v", got)
	}
	if !rot.New.ExpiresAt.IsZero() {
		t.Fatal("a key that never expired got an expiry on rotation")
	}
}

func TestRotateRefusesDeadKeys(t *testing.T) {
	s, _ := newStore(t, nil)
	_, rec := createSpec(t, s, authz.KeySpec{Name: "gone", Owner: "acct_1"})
	if _, err := s.Revoke(context.Background(), rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rotate(context.Background(), mgx, rec.ID, time.Hour); !errors.Is(err, ErrNotLive) {
		t.Fatalf("rotating a revoked key: %v", err)
	}
}

func TestNamesAreUniquePerOwner(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	_, first := createSpec(t, s, authz.KeySpec{Name: "Staging", Owner: "acct_1"})
	_, dup, _ := mgx.Issue(authz.KeySpec{Name: "Staging", Owner: "acct_1"}, time.Now())
	if err := s.Create(ctx, dup); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("same name, same owner: %v", err)
	}
	createSpec(t, s, authz.KeySpec{Name: "Staging", Owner: "acct_2"}) // another owner may
	// After a rotation the name belongs to the new key: still taken.
	if _, err := s.Rotate(ctx, mgx, first.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, dup); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("name after rotation: %v", err)
	}
	// Once no live key holds it, the name is free.
	all, _ := s.List(ctx)
	for _, r := range all {
		if r.Owner == "acct_1" {
			if _, err := s.Revoke(ctx, r.ID, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Create(ctx, dup); err != nil {
		t.Fatalf("name after revoking its holders: %v", err)
	}
}

func TestOneUserKeyPerOwner(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	_, user := createSpec(t, s, authz.KeySpec{Name: "user key", Owner: "acct_1", Kind: authz.KindUser})
	_, second, _ := mgx.Issue(authz.KeySpec{Name: "another user key", Owner: "acct_1", Kind: authz.KindUser}, time.Now())
	if err := s.Create(ctx, second); !errors.Is(err, ErrUserKeyExists) {
		t.Fatalf("second user key: %v", err)
	}
	createSpec(t, s, authz.KeySpec{Name: "product key", Owner: "acct_1"}) // product keys are unlimited
	rot, err := s.Rotate(ctx, mgx, user.ID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if rot.New.Kind != authz.KindUser || !rot.New.ExpiresAt.IsZero() {
		t.Fatalf("rotated user key %+v", rot.New)
	}
	if err := s.Create(ctx, second); !errors.Is(err, ErrUserKeyExists) {
		t.Fatalf("user key after rotation: %v", err)
	}
}

func TestSetScopes(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	key, rec := createSpec(t, s, authz.KeySpec{Name: "scoped", Owner: "acct_1", Scopes: []string{"read"}})
	cache, err := NewCache(s, CacheConfig{TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := cache.Lookup(ctx, authz.HashKey(key)); strings.Join(r.Scopes, ",") != "read" {
		t.Fatalf("scopes %v", r.Scopes)
	}
	before, after, err := s.SetScopes(ctx, rec.ID, []string{"write", "read", "write"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(before.Scopes, ",") != "read" || strings.Join(after.Scopes, ",") != "read,write" {
		t.Fatalf("before %v after %v", before.Scopes, after.Scopes)
	}
	if err := cache.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if r, _ := cache.Lookup(ctx, authz.HashKey(key)); strings.Join(r.Scopes, ",") != "read,write" {
		t.Fatalf("a replica still sees scopes %v after the change feed", r.Scopes)
	}
	if _, _, err := s.SetScopes(ctx, rec.ID, []string{"a b"}); !errors.Is(err, authz.ErrInvalidKeySpec) {
		t.Fatalf("invalid scope: %v", err)
	}
}

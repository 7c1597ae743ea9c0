package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
)

var errCrash = errors.New("simulated crash")

// dueFixture is a store whose clock reads 91 days after its keys were made.
type dueFixture struct {
	store  *Store
	clock  *clock
	target Target
	keys   map[string]string // id → key
}

func newDueFixture(t *testing.T, n int) *dueFixture {
	t.Helper()
	fx := &dueFixture{clock: &clock{t: time.Now()}, keys: map[string]string{}}
	base := vaulttest.UniquePath(t)
	var err error
	fx.store, err = New(Config{Client: vault(t).Client(t, nil), Path: base, Now: fx.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	if fx.target, err = ParseTarget("vault:secret/" + base + "-apps/{owner}/{name}#api_key"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key, rec := createSpec(t, fx.store, authz.KeySpec{Name: fmt.Sprintf("App %d", i), Owner: "acct_1", Scopes: []string{"chat:completions"}})
		fx.keys[rec.ID] = key
	}
	fx.clock.Advance(91 * 24 * time.Hour)
	return fx
}

func (fx *dueFixture) run(t *testing.T, step func(id, step string) error) (RotateDueResult, error) {
	t.Helper()
	return fx.store.RotateDue(context.Background(), RotateDueOptions{
		Format: mgx, OlderThan: 90 * 24 * time.Hour, Grace: 30 * 24 * time.Hour, Deliver: fx.target, step: step,
	})
}

// appKey is what the application finds at its delivery path for rec.
func (fx *dueFixture) appKey(t *testing.T, rec authz.Record) (key, id string) {
	t.Helper()
	sec, err := vault(t).Client(t, nil).KVv2(fx.target.Mount).Get(context.Background(), fx.target.pathFor(rec))
	if err != nil {
		t.Fatalf("read delivery: %v", err)
	}
	key, _ = sec.Data["api_key"].(string)
	id, _ = sec.Data["keygate_key_id"].(string)
	return key, id
}

// checkRotatedOnce asserts old was replaced exactly once, by the key the application
// holds, and that both keys are accepted during the grace.
func (fx *dueFixture) checkRotatedOnce(t *testing.T, oldID string) {
	t.Helper()
	ctx := context.Background()
	old, err := fx.store.Get(ctx, oldID)
	if err != nil {
		t.Fatal(err)
	}
	if old.ReplacedBy == "" {
		t.Fatal("old key not replaced")
	}
	key, id := fx.appKey(t, old)
	if id != old.ReplacedBy || !mgx.Valid(key) {
		t.Fatalf("application holds %s, old key replaced by %s", id, old.ReplacedBy)
	}
	now := fx.clock.Now()
	if got := decide(t, fx.store, key, now); got != authz.ReasonAllowed {
		t.Fatalf("delivered key: %v", got)
	}
	if got := decide(t, fx.store, fx.keys[oldID], now); got != authz.ReasonAllowed {
		t.Fatalf("old key during the grace: %v", got)
	}
	if got := decide(t, fx.store, fx.keys[oldID], now.Add(31*24*time.Hour)); got != authz.ReasonExpired {
		t.Fatalf("old key after the grace: %v", got)
	}
	// Every other successor a crashed run made is revoked: one live key per name.
	all, err := fx.store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, r := range all {
		if r.Name == old.Name && r.ID != oldID && r.Live(now) {
			live++
		}
	}
	if live != 1 {
		t.Fatalf("%d live successors of %s, want 1", live, oldID)
	}
}

func TestRotateDue(t *testing.T) {
	fx := newDueFixture(t, 3)
	res, err := fx.run(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Checked != 3 || len(res.Rotated) != 3 || len(res.Failed) != 0 {
		t.Fatalf("result %+v", res)
	}
	for id := range fx.keys {
		fx.checkRotatedOnce(t, id)
	}
	// A second run finds nothing due: the new keys are young, the old ones replaced.
	res, err = fx.run(t, nil)
	if err != nil || len(res.Rotated) != 0 || len(res.Failed) != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
}

func TestRotateDueNotDue(t *testing.T) {
	fx := newDueFixture(t, 1)
	res, err := fx.store.RotateDue(context.Background(), RotateDueOptions{Format: mgx, OlderThan: 100 * 24 * time.Hour, Grace: time.Hour, Deliver: fx.target})
	if err != nil || res.Checked != 1 || len(res.Rotated) != 0 {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRotateDueResumesAfterACrash(t *testing.T) {
	for _, crashAfter := range []string{"reserved", "created", "delivered"} {
		t.Run("crash after "+crashAfter, func(t *testing.T) {
			fx := newDueFixture(t, 1)
			var oldID string
			for id := range fx.keys {
				oldID = id
			}
			_, err := fx.run(t, func(id, step string) error {
				if step == crashAfter {
					return errCrash
				}
				return nil
			})
			if !errors.Is(err, errCrash) {
				t.Fatalf("run: %v", err)
			}
			// Until a run finishes, the old key is as it was: valid, not replaced.
			old, err := fx.store.Get(context.Background(), oldID)
			if err != nil || old.ReplacedBy != "" || decide(t, fx.store, fx.keys[oldID], fx.clock.Now()) != authz.ReasonAllowed {
				t.Fatalf("after the crash the old key is %+v (%v)", old, err)
			}
			var deliveredBefore string
			if crashAfter == "delivered" {
				_, deliveredBefore = fx.appKey(t, old)
			}

			res, err := fx.run(t, nil)
			if err != nil || len(res.Rotated) != 1 || !res.Rotated[0].Resumed {
				t.Fatalf("re-run: %+v %v", res, err)
			}
			fx.checkRotatedOnce(t, oldID)
			if crashAfter == "delivered" && res.Rotated[0].NewID != deliveredBefore {
				t.Fatalf("the re-run replaced the already delivered key %s with %s", deliveredBefore, res.Rotated[0].NewID)
			}
			if res, err := fx.run(t, nil); err != nil || len(res.Rotated) != 0 {
				t.Fatalf("third run rotated again: %+v %v", res, err)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tgt, err := ParseTarget("vault:secret/apps/{owner}/{name}#api_key")
	if err != nil {
		t.Fatal(err)
	}
	if got := tgt.pathFor(authz.Record{Owner: "team:ml/research", Name: "Production App (EU)"}); got != "apps/team-ml-research/production-app-eu" {
		t.Fatalf("path %q", got)
	}
	for _, bad := range []string{"", "secret/apps#f", "vault:secret#f", "vault:secret/apps", "vault:secret/apps#", "vault:../x/y#f", "vault:secret/a//b#f"} {
		if _, err := ParseTarget(bad); err == nil {
			t.Errorf("ParseTarget(%q) accepted", bad)
		}
	}
}

// TestRotateDueResumesAfterAHalfWrittenSuccessor: a run that stopped between the
// successor's id index and its record (Vault failed over in between, and the clean-up
// of the index failed too) leaves an index with no record; the re-run completes.
func TestRotateDueResumesAfterAHalfWrittenSuccessor(t *testing.T) {
	fx := newDueFixture(t, 1)
	var oldID string
	for id := range fx.keys {
		oldID = id
	}
	if _, err := fx.run(t, func(id, step string) error {
		if step == "reserved" {
			return errCrash
		}
		return nil
	}); !errors.Is(err, errCrash) {
		t.Fatalf("run: %v", err)
	}
	ctx := context.Background()
	sr, _, err := fx.store.getStored(ctx, oldID)
	if err != nil || sr.PendingRotation == "" {
		t.Fatalf("no reserved successor: %+v %v", sr, err)
	}
	_, half := issue(t, authz.KeySpec{Name: "half written"})
	if err := fx.store.write(ctx, fx.store.idPath(sr.PendingRotation), idEntry{KeySHA256: half.Hash.String()}, 0); err != nil {
		t.Fatal(err)
	}
	res, err := fx.run(t, nil)
	if err != nil || len(res.Rotated) != 1 || len(res.Failed) != 0 {
		t.Fatalf("re-run: %+v %v", res, err)
	}
	fx.checkRotatedOnce(t, oldID)
}

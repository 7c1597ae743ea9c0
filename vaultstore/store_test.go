package vaultstore

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/vaulttest"
)

// shared is the package's Vault dev server, started by the first test that needs it.
var shared vaulttest.Shared

func TestMain(m *testing.M) { os.Exit(shared.Main(m)) }

func vault(t testing.TB) *vaulttest.Server { return shared.Get(t) }

func newStore(t *testing.T, wrap func(http.RoundTripper) http.RoundTripper) (*Store, string) {
	t.Helper()
	base := vaulttest.UniquePath(t)
	s, err := New(Config{Client: vault(t).Client(t, wrap), Path: base})
	if err != nil {
		t.Fatal(err)
	}
	return s, base
}

func issue(t testing.TB, spec authz.KeySpec) (string, authz.Record) {
	t.Helper()
	f, err := authz.NewFormat("mgx-sk-")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Owner == "" {
		spec.Owner = "acct_test"
	}
	key, rec, err := f.Issue(spec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return key, rec
}

func TestCreateLookupGetList(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	exp := time.Now().Add(48 * time.Hour)
	key, rec := issue(t, authz.KeySpec{Name: "Production App", Owner: "acct_7", Scopes: []string{"models:read", "chat:completions"}, ExpiresAt: exp})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.Lookup(ctx, authz.HashKey(key))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != rec.ID || got.Name != "Production App" || got.Owner != "acct_7" || got.Hash != rec.Hash ||
		strings.Join(got.Scopes, ",") != "chat:completions,models:read" || !got.ExpiresAt.Equal(rec.ExpiresAt) ||
		!got.CreatedAt.Equal(rec.CreatedAt) || !got.RevokedAt.IsZero() || got.Hint != rec.Hint {
		t.Fatalf("Lookup = %+v\nwant %+v", got, rec)
	}
	byID, err := s.Get(ctx, rec.ID)
	if err != nil || byID.Hash != rec.Hash {
		t.Fatalf("Get = %+v, %v", byID, err)
	}
	_, rec2 := issue(t, authz.KeySpec{Name: "Staging"})
	if err := s.Create(ctx, rec2); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("List returned %d records", len(all))
	}
	byIDs := map[string]authz.Record{all[0].ID: all[0], all[1].ID: all[1]}
	if _, ok := byIDs[rec.ID]; !ok {
		t.Fatalf("List misses %s", rec.ID)
	}
	if sc := byIDs[rec2.ID].Scopes; sc == nil || len(sc) != 0 {
		t.Fatalf("record without scopes read back as %#v", sc)
	}
}

func TestListEmpty(t *testing.T) {
	s, _ := newStore(t, nil)
	all, err := s.List(context.Background())
	if err != nil || len(all) != 0 {
		t.Fatalf("List on an empty path = %v, %v", all, err)
	}
}

func TestNotFound(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	_, err := s.Lookup(ctx, authz.HashKey("mgx-sk-nothing"))
	if !errors.Is(err, ErrKeyNotFound) || !errors.Is(err, authz.ErrKeyNotFound) {
		t.Fatalf("Lookup of an unknown hash: %v", err)
	}
	if _, err := s.Get(ctx, "key_0000000000000000"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("Get of an unknown id: %v", err)
	}
	if _, err := s.Get(ctx, "../../sys/mounts"); !errors.Is(err, ErrInvalidKeyID) {
		t.Fatalf("Get of a path-like id: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	key, rec := issue(t, authz.KeySpec{Name: "ci"})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	r, err := s.Revoke(ctx, rec.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusAt(time.Now()) != authz.StatusRevoked {
		t.Fatalf("revoked record status %v", r.StatusAt(time.Now()))
	}
	got, err := s.Lookup(ctx, authz.HashKey(key))
	if err != nil || got.RevokedAt.IsZero() {
		t.Fatalf("Lookup after revoke = %+v, %v", got, err)
	}
	// Revoking again keeps the first revocation time.
	again, err := s.Revoke(ctx, rec.ID, at.Add(time.Hour))
	if err != nil || !again.RevokedAt.Equal(r.RevokedAt) {
		t.Fatalf("second revoke = %v, %v; want revoked_at %v", again.RevokedAt, err, r.RevokedAt)
	}
}

func TestCreateRefusesDuplicates(t *testing.T) {
	s, _ := newStore(t, nil)
	ctx := context.Background()
	_, rec := issue(t, authz.KeySpec{Name: "dup"})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, rec); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("second Create of the same record: %v, want ErrNameTaken", err)
	}
	if err := s.put(ctx, rec); !errors.Is(err, ErrConflict) {
		t.Fatalf("second write of the same id: %v, want ErrConflict", err)
	}
	// Same hash under a new id and name: the record write conflicts and the new id is removed.
	other := rec
	other.ID, other.Name = "key_AAAAAAAAAAAAAAAA", "dup 2"
	if err := s.Create(ctx, other); !errors.Is(err, ErrConflict) {
		t.Fatalf("Create of a known hash: %v, want ErrConflict", err)
	}
	if _, err := s.Get(ctx, other.ID); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("the refused id is still there: %v", err)
	}
}

func TestDeletedRecordIsNotFound(t *testing.T) {
	s, base := newStore(t, nil)
	ctx := context.Background()
	key, rec := issue(t, authz.KeySpec{Name: "to-delete"})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	// An operator soft-deletes the record's latest version with the vault CLI/API.
	if err := vault(t).Client(t, nil).KVv2("secret").Delete(ctx, base+"/records/"+rec.Hash.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, authz.HashKey(key)); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("Lookup of a deleted record: %v", err)
	}
}

func TestVaultHoldsNoKeyMaterial(t *testing.T) {
	s, base := newStore(t, nil)
	ctx := context.Background()
	key, rec := issue(t, authz.KeySpec{Name: "canary", Scopes: []string{"admin"}})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Revoke(ctx, rec.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	dump := vault(t).DumpKV(t, "secret", base)
	random := key[len("mgx-sk-") : len("mgx-sk-")+authz.RandomLen]
	if strings.Contains(dump, key) || strings.Contains(dump, random) {
		t.Fatalf("Vault holds key material under %s", base)
	}
	if !strings.Contains(dump, rec.Hash.String()) || !strings.Contains(dump, rec.ID) {
		t.Fatalf("dump does not contain the record; the scan proves nothing:\n%s", dump)
	}
}

func TestVaultUnreachable(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.Address = "http://127.0.0.1:1" // nothing listens on port 1
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lookup(context.Background(), authz.HashKey("mgx-sk-x"))
	if !errors.Is(err, ErrVaultUnavailable) || !errors.Is(err, authz.ErrStoreUnavailable) || errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("Lookup with Vault down: %v", err)
	}
}

func TestLookupTimeout(t *testing.T) {
	// A transport that holds every request until its context ends, like a hung Vault.
	hang := func(http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			<-r.Context().Done()
			return nil, r.Context().Err()
		})
	}
	base := vaulttest.UniquePath(t)
	c := vault(t).Client(t, hang)
	c.SetMaxRetries(0)
	s, err := New(Config{Client: c, Path: base, LookupTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Lookup(context.Background(), authz.HashKey("mgx-sk-x"))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrVaultUnavailable) {
			t.Fatalf("Lookup against a hung Vault: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Lookup did not honour its timeout")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestNewValidatesPaths(t *testing.T) {
	c := vault(t).Client(t, nil)
	for _, p := range []string{"../sys", "a//b", "/lead", "trail/", "sp ace", "a/./b"} {
		if _, err := New(Config{Client: c, Path: p}); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("New(Path %q) = %v, want ErrInvalidPath", p, err)
		}
		if _, err := New(Config{Client: c, Mount: p}); !errors.Is(err, ErrInvalidPath) {
			t.Errorf("New(Mount %q) = %v, want ErrInvalidPath", p, err)
		}
	}
}

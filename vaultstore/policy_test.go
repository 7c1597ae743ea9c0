package vaultstore

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
)

// tokenWithPolicy returns a client whose token has only the shipped policy file, with
// its base path rewritten to base.
func tokenWithPolicy(t *testing.T, file, base string) *api.Client {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	root := vault(t).Client(t, nil)
	name := strings.ReplaceAll(base, "/", "-") + "-" + strings.TrimSuffix(file[len("policies/"):], ".hcl")
	hcl := strings.NewReplacer(
		"secret/data/keygate/", "secret/data/"+base+"/",
		"secret/metadata/keygate/", "secret/metadata/"+base+"/",
		"secret/data/apps/", "secret/data/"+base+"-apps/",
	).Replace(string(raw))
	if err := root.Sys().PutPolicy(name, hcl); err != nil {
		t.Fatal(err)
	}
	sec, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{name}, NoDefaultPolicy: true, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	c := vault(t).Client(t, nil)
	c.SetToken(sec.Auth.ClientToken)
	return c
}

// TestShippedPoliciesAreEnoughAndNoMore runs each command's operations with a token that
// holds only the policy the README gives for it.
func TestShippedPoliciesAreEnoughAndNoMore(t *testing.T) {
	ctx := context.Background()
	_, base := newStore(t, nil)
	keysStore, err := New(Config{Client: tokenWithPolicy(t, "policies/keys.hcl", base), Path: base})
	if err != nil {
		t.Fatal(err)
	}
	serveStore, err := New(Config{Client: tokenWithPolicy(t, "policies/serve.hcl", base), Path: base})
	if err != nil {
		t.Fatal(err)
	}

	key, rec := issue(t, authz.KeySpec{Name: "policy"})
	if err := keysStore.Create(ctx, rec); err != nil {
		t.Fatalf("create with keys.hcl: %v", err)
	}
	if _, err := keysStore.List(ctx); err != nil {
		t.Fatalf("list with keys.hcl: %v", err)
	}
	if _, err := keysStore.Get(ctx, rec.ID); err != nil {
		t.Fatalf("show with keys.hcl: %v", err)
	}
	if got, err := keysStore.ListOwner(ctx, rec.Owner); err != nil || len(got) != 1 {
		t.Fatalf("owner list with keys.hcl: %d %v", len(got), err)
	}
	if !keysStore.ownersIndexed.Load() {
		t.Fatal("keys.hcl could not complete the owner index")
	}
	// A duplicate id makes Create undo its id entry: the delete capability is needed.
	dup := rec
	dup.ID, dup.Name = "key_BBBBBBBBBBBBBBBB", "policy 2"
	if err := keysStore.Create(ctx, dup); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate create with keys.hcl: %v", err)
	}
	if _, err := keysStore.Get(ctx, dup.ID); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("keys.hcl could not undo the refused id: %v", err)
	}
	var e ownerEntry
	if _, err := keysStore.read(ctx, keysStore.ownerPath(dup.Owner, dup.ID), &e); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("keys.hcl could not undo the refused owner entry: %v", err)
	}

	if got, err := serveStore.Lookup(ctx, authz.HashKey(key)); err != nil || got.ID != rec.ID {
		t.Fatalf("lookup with serve.hcl: %v", err)
	}
	cache, err := NewCache(serveStore, CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Poll(ctx); err != nil {
		t.Fatalf("change feed with serve.hcl: %v", err)
	}
	usage := serveStore.NewUsage()
	usage.Seen(rec.ID, time.Now())
	if err := usage.Flush(ctx); err != nil {
		t.Fatalf("usage with serve.hcl: %v", err)
	}
	_, other := issue(t, authz.KeySpec{Name: "not allowed"})
	if err := serveStore.Create(ctx, other); !errors.Is(err, ErrVaultUnavailable) {
		t.Fatalf("serve.hcl may create keys: %v", err)
	}
	if _, err := serveStore.List(ctx); err == nil {
		t.Fatal("serve.hcl may list keys")
	}
	if _, err := serveStore.ListOwner(ctx, rec.Owner); err == nil {
		t.Fatal("serve.hcl may list an owner's keys")
	}
	if _, err := serveStore.Revoke(ctx, rec.ID, time.Now()); err == nil {
		t.Fatal("serve.hcl may revoke keys")
	}

	if _, err := keysStore.Revoke(ctx, rec.ID, time.Now()); err != nil {
		t.Fatalf("revoke with keys.hcl: %v", err)
	}
	if _, _, err := keysStore.SetScopes(ctx, rec.ID, []string{"read"}); err != nil {
		t.Fatalf("scopes with keys.hcl: %v", err)
	}
	_, young := issue(t, authz.KeySpec{Name: "young"})
	if err := keysStore.Create(ctx, young); err != nil {
		t.Fatal(err)
	}
	if _, err := keysStore.Rotate(ctx, mgx, young.ID, time.Hour); err != nil {
		t.Fatalf("rotate with keys.hcl: %v", err)
	}

	jobStore, err := New(Config{Client: tokenWithPolicy(t, "policies/rotate-due.hcl", base), Path: base})
	if err != nil {
		t.Fatal(err)
	}
	target, err := ParseTarget("vault:secret/" + base + "-apps/{owner}/{name}#api_key")
	if err != nil {
		t.Fatal(err)
	}
	res, err := jobStore.RotateDue(ctx, RotateDueOptions{Format: mgx, Grace: time.Hour, Deliver: target})
	if err != nil || len(res.Failed) != 0 || len(res.Rotated) == 0 {
		t.Fatalf("rotate-due with rotate-due.hcl: %+v %v", res, err)
	}
	elsewhere, _ := ParseTarget("vault:secret/" + base + "-other/{name}#api_key")
	_, last := issue(t, authz.KeySpec{Name: "last"})
	if err := keysStore.Create(ctx, last); err != nil {
		t.Fatal(err)
	}
	if _, err := jobStore.Deliver(ctx, elsewhere, "x", last); err == nil {
		t.Fatal("rotate-due.hcl may write outside the applications' paths")
	}
}

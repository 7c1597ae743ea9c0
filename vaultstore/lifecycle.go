package vaultstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keygate/keygate/authz"
)

// Claims make names unique per owner and give each owner at most one user key:
//
//	<base>/names/<sha256(owner, name)>   {"id": the live key holding the name}
//	<base>/users/<sha256(owner)>         {"id": the owner's user key}
//
// A claim is taken with check-and-set, so two concurrent creates cannot both win. A
// claim whose key is revoked or expired is free again; a rotation moves it to the new key.
type claimEntry struct {
	ID string `json:"id"`
}

func claimHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) namePath(owner, name string) string {
	return s.base + "/names/" + claimHash(owner, name)
}
func (s *Store) userPath(owner string) string { return s.base + "/users/" + claimHash(owner) }

func (s *Store) claims(r authz.Record) []string {
	paths := []string{s.namePath(r.Owner, r.Name)}
	if r.Kind == authz.KindUser {
		paths = append(paths, s.userPath(r.Owner))
	}
	return paths
}

// claim takes r's claims, unless a live key holds one.
func (s *Store) claim(ctx context.Context, r authz.Record) error {
	for i, path := range s.claims(r) {
		taken := ErrNameTaken
		if i == 1 {
			taken = ErrUserKeyExists
		}
		var e claimEntry
		version, err := s.read(ctx, path, &e)
		switch {
		case errors.Is(err, ErrKeyNotFound):
			version = 0
		case err != nil:
			return err
		default:
			holder, _, err := s.get(ctx, e.ID)
			switch {
			case err == nil && holder.Live(s.now()):
				return fmt.Errorf("%w (%s)", taken, e.ID)
			case err != nil && !errors.Is(err, ErrKeyNotFound):
				return err
			}
		}
		if err := s.write(ctx, path, claimEntry{ID: r.ID}, version); err != nil {
			return err
		}
	}
	return nil
}

// moveClaims points old's claims at next, where old still holds them.
func (s *Store) moveClaims(ctx context.Context, old, next authz.Record) error {
	for _, path := range s.claims(old) {
		var e claimEntry
		version, err := s.read(ctx, path, &e)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if e.ID != "" && e.ID != old.ID {
			continue // taken by another key since; leave it
		}
		if err := s.write(ctx, path, claimEntry{ID: next.ID}, version); err != nil {
			return err
		}
	}
	return nil
}

// Rotation is the outcome of rotating a key.
type Rotation struct {
	Key string       // the new key, to be shown once or delivered
	New authz.Record // the new key's record
	Old authz.Record // the old key's record: replaced, valid until its grace ends
}

// Rotate replaces the key with the given id: a new key with the same name, owner,
// scopes, kind and lifetime. The old key stays valid for grace (never longer than it
// already had), or is revoked at once when grace is 0. Replicas learn of the change
// through the change feed.
func (s *Store) Rotate(ctx context.Context, f authz.Format, id string, grace time.Duration) (Rotation, error) {
	old, version, err := s.getStored(ctx, id)
	if err != nil {
		return Rotation{}, err
	}
	oldRec, err := old.record()
	if err != nil {
		return Rotation{}, err
	}
	if err := s.rotatable(oldRec); err != nil {
		return Rotation{}, err
	}
	if old.PendingRotation != "" {
		return Rotation{}, fmt.Errorf("%w: a rotation job is replacing it (%s)", ErrAlreadyRotated, old.PendingRotation)
	}
	key, next, err := s.successor(f, oldRec, "")
	if err != nil {
		return Rotation{}, err
	}
	if err := s.put(ctx, next); err != nil {
		return Rotation{}, err
	}
	replaced, err := s.finish(ctx, old, version, next, grace)
	if err != nil {
		// The old key was not marked: withdraw the new one, nobody has seen it.
		_, _ = s.Revoke(context.WithoutCancel(ctx), next.ID, s.now())
		return Rotation{}, err
	}
	return Rotation{Key: key, New: next, Old: replaced}, nil
}

func (s *Store) rotatable(r authz.Record) error {
	if !r.Live(s.now()) {
		return fmt.Errorf("%w: %s", ErrNotLive, r.ID)
	}
	if r.ReplacedBy != "" {
		return fmt.Errorf("%w: %s replaced it", ErrAlreadyRotated, r.ReplacedBy)
	}
	return nil
}

// successor issues the key that replaces old. id, when not empty, is the id it takes.
func (s *Store) successor(f authz.Format, old authz.Record, id string) (string, authz.Record, error) {
	now := s.now()
	spec := authz.KeySpec{Name: old.Name, Owner: old.Owner, Scopes: old.Scopes, Kind: old.Kind, Models: old.Models, Plan: old.Plan, BoundCert: old.BoundCert,
		CreatedBy: old.CreatedBy}
	if !old.ExpiresAt.IsZero() {
		spec.ExpiresAt = now.Add(old.ExpiresAt.Sub(old.CreatedAt)) // the same lifetime
	}
	key, rec, err := f.Issue(spec, now)
	if err != nil {
		return "", authz.Record{}, err
	}
	if id != "" {
		rec.ID = id
	}
	return key, rec, nil
}

// finish marks old replaced by next, ends old's validity after grace (0: revokes it),
// moves its claims to next and announces the change.
func (s *Store) finish(ctx context.Context, old storedRecord, version int, next authz.Record, grace time.Duration) (authz.Record, error) {
	now := s.now().UTC().Truncate(time.Second)
	old.ReplacedBy, old.PendingRotation = next.ID, ""
	if grace <= 0 {
		old.RevokedAt = now
	} else if end := now.Add(grace); old.ExpiresAt.IsZero() || end.Before(old.ExpiresAt) {
		old.ExpiresAt = end
	}
	rec, err := old.record()
	if err != nil {
		return authz.Record{}, err
	}
	if err := s.write(ctx, s.recordPath(rec.Hash), old, version); err != nil {
		return authz.Record{}, err
	}
	if err := s.moveClaims(ctx, rec, next); err != nil {
		return rec, err
	}
	return rec, s.publish(ctx, rec.Hash)
}

// SetScopes replaces the scopes of the key with the given id and returns the record
// before and after the change.
func (s *Store) SetScopes(ctx context.Context, id string, scopes []string) (before, after authz.Record, err error) {
	sr, version, err := s.getStored(ctx, id)
	if err != nil {
		return before, after, err
	}
	if before, err = sr.record(); err != nil {
		return before, after, err
	}
	if err := authz.ValidateScopes(scopes); err != nil {
		return before, after, err
	}
	sr.Scopes = slices.Compact(slices.Sorted(slices.Values(scopes)))
	if err := s.write(ctx, s.recordPath(before.Hash), sr, version); err != nil {
		return before, after, err
	}
	if after, err = sr.record(); err != nil {
		return before, after, err
	}
	return before, after, s.publish(ctx, after.Hash)
}

package vaultstore

import (
	"context"
	"errors"
	"time"

	"github.com/keygate/keygate/authz"
)

// The owner index lists each owner's keys, so that an owner's listing reads only its
// own records:
//
//	<base>/owners/<sha256(owner)>/<key id>   {"id": the key id}
//	<base>/owners-indexed                    {"at": when every older record was indexed}
//
// put writes a key's entry before its id index and record, so every record written
// since has one. Records written before the index existed get theirs from the first
// ListOwner, which lists everything once, writes the missing entries and then the
// marker; until the marker exists, ListOwner reads every record. A replica of an older
// version that creates keys after the marker is written leaves them out of owner
// listings: upgrade every writer before the first owner listing.
type ownerEntry struct {
	ID string `json:"id"`
}

type indexMarker struct {
	At time.Time `json:"at"`
}

func (s *Store) ownerDir(owner string) string      { return s.base + "/owners/" + claimHash(owner) }
func (s *Store) ownerPath(owner, id string) string { return s.ownerDir(owner) + "/" + id }
func (s *Store) markerPath() string                { return s.base + "/owners-indexed" }

// index writes the owner index entry of r.
func (s *Store) index(ctx context.Context, r authz.Record) error {
	err := s.write(ctx, s.ownerPath(r.Owner, r.ID), ownerEntry{ID: r.ID}, 0)
	if errors.Is(err, ErrConflict) {
		return nil // there already
	}
	return err
}

// ListOwner returns the records of one owner's keys, oldest first: one list and two
// reads per key once the owner index is complete. Like List, it leaves out records that
// do not decode.
func (s *Store) ListOwner(ctx context.Context, owner string) ([]authz.Record, error) {
	if !s.ownersIndexed.Load() {
		var m indexMarker
		_, err := s.read(ctx, s.markerPath(), &m)
		switch {
		case errors.Is(err, ErrKeyNotFound):
			return s.backfillOwners(ctx, owner)
		case err != nil:
			return nil, err
		}
		s.ownersIndexed.Store(true)
	}
	out, _, err := s.listDir(ctx, s.ownerDir(owner), "owners", func(r authz.Record) bool { return r.Owner == owner })
	return out, err
}

// backfillOwners answers ListOwner from the full list, and indexes every record on the
// way; when all of them are, it writes the marker. A token that may not write the index
// still gets its answer.
func (s *Store) backfillOwners(ctx context.Context, owner string) ([]authz.Record, error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	out := []authz.Record{}
	complete := true
	for _, r := range all {
		if err := s.index(ctx, r); err != nil {
			complete = false
		}
		if r.Owner == owner {
			out = append(out, r)
		}
	}
	if complete {
		err := s.write(ctx, s.markerPath(), indexMarker{At: s.now().UTC()}, 0)
		if err == nil || errors.Is(err, ErrConflict) {
			s.ownersIndexed.Store(true)
		}
	}
	return out, nil
}

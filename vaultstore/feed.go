package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/keygate/keygate/authz"
)

// The change feed is one KV v2 secret, <base>/changes, that every write to a record
// appends to: a generation counter and the hashes of the most recent changes. Replicas
// poll it (one small read) and drop the changed records from their caches, so a
// revocation reaches every replica within a poll interval whatever the cache TTL.
// Vault's own event stream is experimental and is not used.
const maxRecentChanges = 512

type changeFeed struct {
	Generation uint64   `json:"generation"`
	Recent     []change `json:"recent"`
}

type change struct {
	Generation uint64 `json:"generation"`
	KeySHA256  string `json:"key_sha256"`
}

func (s *Store) feedPath() string { return s.base + "/changes" }

// publish appends the hashes of changed records to the change feed. Writers that lose
// the check-and-set wait a random while, growing with each loss, before trying again:
// without it, concurrent writers on a Raft cluster collide again in lockstep.
func (s *Store) publish(ctx context.Context, hashes ...authz.KeyHash) error {
	for attempt := range 20 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w: change feed busy: %w", ErrConflict, ctx.Err())
			case <-time.After(rand.N(time.Duration(attempt) * 5 * time.Millisecond)):
			}
		}
		var f changeFeed
		version, err := s.read(ctx, s.feedPath(), &f)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		for _, h := range hashes {
			f.Generation++
			f.Recent = append(f.Recent, change{Generation: f.Generation, KeySHA256: h.String()})
		}
		if n := len(f.Recent); n > maxRecentChanges {
			f.Recent = f.Recent[n-maxRecentChanges:]
		}
		err = s.write(ctx, s.feedPath(), f, version)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: change feed busy", ErrConflict)
}

// Changes is what the change feed says at one moment.
type Changes struct {
	// Generation counts every change ever published; 0 for an empty feed.
	Generation uint64
	// Oldest is the generation of the oldest change still listed.
	Oldest uint64
	// Recent maps the hash of each listed change to its latest generation.
	Recent map[authz.KeyHash]uint64
}

// ReadChanges reads the change feed.
func (s *Store) ReadChanges(ctx context.Context) (Changes, error) {
	var f changeFeed
	if _, err := s.read(ctx, s.feedPath(), &f); err != nil && !errors.Is(err, ErrKeyNotFound) {
		return Changes{}, err
	}
	c := Changes{Generation: f.Generation, Recent: make(map[authz.KeyHash]uint64, len(f.Recent))}
	for i, ch := range f.Recent {
		h, err := authz.ParseKeyHash(ch.KeySHA256)
		if err != nil {
			return Changes{}, fmt.Errorf("change feed: %w", err)
		}
		if i == 0 {
			c.Oldest = ch.Generation
		}
		c.Recent[h] = ch.Generation
	}
	return c, nil
}

package vaultstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Usage remembers when each key was last used and writes it to Vault in batches, never
// once per request: <base>/usage/<key id> holds {"last_used_at": RFC 3339}. Replicas
// each flush their own observations; a flush never moves a time backwards.
//
// A Usage is safe for concurrent use.
type Usage struct {
	store *Store
	mu    sync.Mutex
	seen  map[string]int64 // key id → Unix seconds
}

// NewUsage returns a Usage writing to s.
func (s *Store) NewUsage() *Usage { return &Usage{store: s, seen: map[string]int64{}} }

// Seen records that the key with the given id was used at the given time. It does no I/O.
func (u *Usage) Seen(id string, at time.Time) {
	sec := at.Unix()
	u.mu.Lock()
	if u.seen[id] < sec {
		u.seen[id] = sec
	}
	u.mu.Unlock()
}

type usageEntry struct {
	LastUsedAt time.Time `json:"last_used_at"`
}

func (s *Store) usagePath(id string) string { return s.base + "/usage/" + id }

// Flush writes what was seen since the last flush: one read and at most one write per
// key. What it could not write is kept for the next flush.
func (u *Usage) Flush(ctx context.Context) error {
	u.mu.Lock()
	batch := u.seen
	u.seen = make(map[string]int64, len(batch))
	u.mu.Unlock()
	var errs []error
	for id, sec := range batch {
		if err := u.store.markUsed(ctx, id, time.Unix(sec, 0).UTC()); err != nil {
			errs = append(errs, err)
			u.Seen(id, time.Unix(sec, 0))
		}
	}
	return errors.Join(errs...)
}

// Run flushes every interval until ctx ends, then flushes once more.
func (u *Usage) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = u.Flush(fctx)
			cancel()
			return
		case <-t.C:
			_ = u.Flush(ctx)
		}
	}
}

func (s *Store) markUsed(ctx context.Context, id string, at time.Time) error {
	for range 5 {
		var e usageEntry
		version, err := s.read(ctx, s.usagePath(id), &e)
		if err != nil && !errors.Is(err, ErrKeyNotFound) {
			return err
		}
		if !e.LastUsedAt.Before(at) {
			return nil // another replica already recorded a later use
		}
		err = s.write(ctx, s.usagePath(id), usageEntry{LastUsedAt: at}, version)
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: usage of %s", ErrConflict, id)
}

// LastUsed returns when the key with the given id was last used, as flushed to Vault;
// the zero time when it never was.
func (s *Store) LastUsed(ctx context.Context, id string) (time.Time, error) {
	var e usageEntry
	_, err := s.read(ctx, s.usagePath(id), &e)
	if errors.Is(err, ErrKeyNotFound) {
		return time.Time{}, nil
	}
	return e.LastUsedAt, err
}

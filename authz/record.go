package authz

import (
	"context"
	"time"
)

// Record is what the store knows about one key. It never holds the key itself.
type Record struct {
	ID        string    // public id, "key_" + 16 base62 characters
	Name      string    // human name, unique per owner
	Owner     string    // account the key belongs to; may be empty
	Scopes    []string  // permissions granted to the key
	Hash      KeyHash   // SHA-256 of the whole key
	Hint      string    // prefix + "..." + last 4 characters, for listings
	CreatedAt time.Time //
	ExpiresAt time.Time // zero: never expires
	RevokedAt time.Time // zero: not revoked
}

// Status is a record's state at a given time.
type Status string

// Record states.
const (
	StatusActive  Status = "active"
	StatusExpired Status = "expired"
	StatusRevoked Status = "revoked"
)

// StatusAt returns the record's state at now. Revocation wins over expiry.
func (r *Record) StatusAt(now time.Time) Status {
	switch {
	case !r.RevokedAt.IsZero():
		return StatusRevoked
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return StatusExpired
	default:
		return StatusActive
	}
}

// KeyLookup finds the record of a key by the key's hash. It returns an error wrapping
// ErrKeyNotFound when no record has that hash, and one wrapping ErrStoreUnavailable when
// the store could not answer.
type KeyLookup interface {
	Lookup(ctx context.Context, hash KeyHash) (Record, error)
}

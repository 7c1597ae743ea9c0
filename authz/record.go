package authz

import (
	"context"
	"time"
)

// Record is what the store knows about one key. It never holds the key itself.
type Record struct {
	ID        string    // public id, "key_" + 16 base62 characters
	Name      string    // human name, unique per owner among its live keys
	Owner     string    // account the key belongs to
	Kind      Kind      // KindProduct, or the owner's one permanent KindUser key
	Scopes    []string  // permissions granted to the key
	Hash      KeyHash   // SHA-256 of the whole key
	Hint      string    // prefix + "..." + last 4 characters, for listings
	CreatedAt time.Time //
	ExpiresAt time.Time // zero: never expires
	RevokedAt time.Time // zero: not revoked
	// ReplacedBy is the id of the key that replaced this one in a rotation. The key
	// stays valid until ExpiresAt, the end of the rotation's grace period.
	ReplacedBy string
	// Models is the key's model allow-list for model routes (entries may end in '*');
	// empty: any model.
	Models []string
	// Plan names the rate-limit plan of the configuration that applies to the key;
	// empty: the default plan.
	Plan string
	// BoundCert, when set, binds the key to a client certificate: its SPIFFE ID, or
	// "sha256:" and the certificate's fingerprint. The key is refused without it.
	BoundCert string
	// CreatedBy is the id of the admin API caller's key that created the key (rotations
	// keep it); empty for keys made by the CLI or a rotation job.
	CreatedBy string
}

// Kind is the kind of a key (MUTX's key types).
type Kind string

// Key kinds.
const (
	// KindProduct is a named key an owner may have many of, with optional expiry.
	KindProduct Kind = "product"
	// KindUser is an owner's single permanent key: it never expires.
	KindUser Kind = "user"
	// KindCertificate is not stored: it is the record of a request let in by an
	// identity rule on its client certificate alone.
	KindCertificate Kind = "certificate"
)

// Status is a record's state at a given time.
type Status string

// Record states.
const (
	StatusActive   Status = "active"
	StatusRotating Status = "rotating" // replaced, still valid until its grace period ends
	StatusExpired  Status = "expired"
	StatusRevoked  Status = "revoked"
)

// StatusAt returns the record's state at now. Revocation wins over expiry.
func (r *Record) StatusAt(now time.Time) Status {
	switch {
	case !r.RevokedAt.IsZero():
		return StatusRevoked
	case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
		return StatusExpired
	case r.ReplacedBy != "":
		return StatusRotating
	default:
		return StatusActive
	}
}

// Live reports whether the key is accepted at now (active or rotating).
func (r *Record) Live(now time.Time) bool {
	st := r.StatusAt(now)
	return st == StatusActive || st == StatusRotating
}

// KeyLookup finds the record of a key by the key's hash. It returns an error wrapping
// ErrKeyNotFound when no record has that hash, and one wrapping ErrStoreUnavailable when
// the store could not answer.
type KeyLookup interface {
	Lookup(ctx context.Context, hash KeyHash) (Record, error)
}

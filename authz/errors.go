package authz

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; none ever carries key material.
var (
	// ErrKeyNotFound is returned by a KeyLookup when no record has the given hash.
	// The engine turns it into a denial, not an error.
	ErrKeyNotFound = errors.New("api key not found")

	// ErrStoreUnavailable means the key store could not answer (unreachable, timed
	// out, 5xx) and had nothing usable cached. The engine denies with a 503.
	ErrStoreUnavailable = errors.New("key store unavailable")

	// ErrLookupThrottled means the store declined to look up an uncached key because its
	// miss budget is spent (a flood of unknown keys). The engine denies with a 503.
	ErrLookupThrottled = errors.New("key lookup throttled")

	// ErrInvalidPrefix is returned by NewFormat for an unusable key prefix.
	ErrInvalidPrefix = errors.New("invalid key prefix")

	// ErrInvalidProfile is returned by ParseProfile for an unknown deny profile name.
	ErrInvalidProfile = errors.New("unknown deny profile")
)

package authz

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; none ever carries key material.
var (
	// ErrKeyNotFound is returned by a KeyLookup when no record has the given hash.
	// The engine turns it into a denial, not an error.
	ErrKeyNotFound = errors.New("api key not found")

	// ErrStoreUnavailable means the key store could not answer (unreachable, timed
	// out, 5xx). The engine returns it wrapped: keygate could not decide.
	ErrStoreUnavailable = errors.New("key store unavailable")

	// ErrInvalidPrefix is returned by NewFormat for an unusable key prefix.
	ErrInvalidPrefix = errors.New("invalid key prefix")

	// ErrInvalidProfile is returned by ParseProfile for an unknown deny profile name.
	ErrInvalidProfile = errors.New("unknown deny profile")
)

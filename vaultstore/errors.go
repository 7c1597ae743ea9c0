package vaultstore

import (
	"errors"
	"fmt"

	"github.com/keygate/keygate/authz"
)

var (
	// ErrKeyNotFound means no record matches the hash or id. It is authz.ErrKeyNotFound,
	// so the engine reads it as an unknown key.
	ErrKeyNotFound = authz.ErrKeyNotFound

	// ErrVaultUnavailable means Vault could not answer: unreachable, timed out, sealed, a
	// 5xx, or a token without the needed policy. It wraps authz.ErrStoreUnavailable.
	ErrVaultUnavailable = fmt.Errorf("vault unavailable (%w)", authz.ErrStoreUnavailable)

	// ErrConflict means a concurrent writer changed the record first (check-and-set failed).
	ErrConflict = errors.New("record changed concurrently")

	// ErrInvalidPath is returned by New for an unusable mount or base path.
	ErrInvalidPath = errors.New("invalid vault path")

	// ErrInvalidKeyID is returned for an id that is not of the form key_XXXXXXXXXXXXXXXX.
	ErrInvalidKeyID = errors.New("invalid key id")
)

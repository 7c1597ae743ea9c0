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

	// ErrNameTaken means the owner already has a live key with that name.
	ErrNameTaken = errors.New("the owner already has a live key with this name")

	// ErrUserKeyExists means the owner already has a live user key.
	ErrUserKeyExists = errors.New("the owner already has a user key")

	// ErrNotLive means the key is revoked or expired, so it cannot be rotated.
	ErrNotLive = errors.New("the key is revoked or expired")

	// ErrAlreadyRotated means the key was already replaced by a rotation.
	ErrAlreadyRotated = errors.New("the key was already rotated")

	// ErrInvalidPath is returned by New for an unusable mount or base path.
	ErrInvalidPath = errors.New("invalid vault path")

	// ErrUndecodable means a record in Vault is not one keygate can read (written by
	// hand, or damaged). List leaves it out and ListReport names it.
	ErrUndecodable = errors.New("undecodable record")

	// ErrInvalidKeyID is returned for an id that is not of the form key_XXXXXXXXXXXXXXXX.
	ErrInvalidKeyID = errors.New("invalid key id")
)

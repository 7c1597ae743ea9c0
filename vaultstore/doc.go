// Package vaultstore keeps keygate's key records in a HashiCorp Vault KV v2 engine.
//
// Vault never holds a key, only its SHA-256. Under the configured mount and base path:
//
//	<base>/records/<sha256 hex>   the key's record (id, name, owner, scopes, hint, times)
//	<base>/ids/<key id>           {"key_sha256": "<sha256 hex>"}, to find a record by id
//
// The check path reads one secret per lookup (records/<hash>); the id index serves the
// management commands. Writes use KV v2 check-and-set, so concurrent changes to one key
// never overwrite each other silently.
//
// A Store is safe for concurrent use.
package vaultstore

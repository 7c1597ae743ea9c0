// Package authz is keygate's decision engine: credentials in, decision out.
//
// An Engine reads the credential headers of one request (Authorization: Bearer or
// X-API-Key), checks the key's format and checksum without any I/O, looks the key up by
// its SHA-256 hash through the KeyLookup it was given, and returns a Decision: an allow
// carrying the key's Record, or a denial rendered in the configured deny Profile. The
// package does no network or file I/O of its own, so every decision can be tested and
// benchmarked in-process; the Envoy adapter and the key store live elsewhere.
//
// An Engine is safe for concurrent use once built; its configuration is read-only.
package authz

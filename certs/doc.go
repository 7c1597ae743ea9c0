// Package certs handles X.509 client certificates for keygate: decoding the leaf
// certificate Envoy forwards (URL-escaped PEM in attributes.source.certificate, or a
// trusted proxy's x-forwarded-client-cert / RFC 9440 Client-Cert header), verifying it
// against keygate's own CA bundle and CRL (defence in depth: a misconfigured Envoy must
// not open the door), and deriving the client's identity: SPIFFE IDs, DNS names, subject
// CN and OU, and the certificate's SHA-256 fingerprint.
//
// Nothing here does network I/O; a Verifier is built from PEM bytes the caller loaded.
// A Verifier is safe for concurrent use.
package certs

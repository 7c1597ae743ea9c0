package certs

import "errors"

// Sentinel errors. None carries certificate or key material beyond what is public.
var (
	ErrNoCACerts     = errors.New("no CA certificates in the bundle")
	ErrBadPEM        = errors.New("not a PEM certificate")
	ErrUntrusted     = errors.New("certificate not signed by a trusted CA")
	ErrExpired       = errors.New("certificate expired or not yet valid")
	ErrRevoked       = errors.New("certificate revoked")
	ErrNotClientAuth = errors.New("certificate not valid for client authentication")
	ErrBadCRL        = errors.New("invalid CRL")
	ErrBadXFCC       = errors.New("invalid x-forwarded-client-cert header")
	ErrBadClientCert = errors.New("invalid Client-Cert header")
)

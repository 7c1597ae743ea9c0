package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
)

// Identity is who a verified client certificate names.
type Identity struct {
	SPIFFE      []string // URI SANs with the spiffe scheme
	URIs        []string // every URI SAN
	DNS         []string // DNS SANs
	CommonName  string
	OrgUnits    []string
	Fingerprint string // "sha256:" and the lower-case hex SHA-256 of the DER certificate
	NotAfter    time.Time
}

// Verifier checks client certificates against a CA bundle and, optionally, a CRL.
type Verifier struct {
	roots   *x509.CertPool
	revoked map[string]bool // serial numbers (decimal) the CRL lists
	now     func() time.Time
}

// NewVerifier returns a Verifier trusting the CA certificates in caPEM. crlPEM, when not
// empty, is a CRL (PEM or DER) signed by one of those CAs. now is the clock (nil:
// time.Now).
func NewVerifier(caPEM, crlPEM []byte, now func() time.Time) (*Verifier, error) {
	cas := ParseCertificates(caPEM)
	if len(cas) == 0 {
		return nil, ErrNoCACerts
	}
	v := &Verifier{roots: x509.NewCertPool(), revoked: map[string]bool{}, now: now}
	if v.now == nil {
		v.now = time.Now
	}
	for _, c := range cas {
		v.roots.AddCert(c)
	}
	if len(crlPEM) > 0 {
		der := crlPEM
		if b, _ := pem.Decode(crlPEM); b != nil {
			der = b.Bytes
		}
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCRL, err)
		}
		signed := false
		for _, ca := range cas {
			if crl.CheckSignatureFrom(ca) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return nil, fmt.Errorf("%w: not signed by a trusted CA", ErrBadCRL)
		}
		for _, e := range crl.RevokedCertificateEntries {
			v.revoked[serialKey(e.SerialNumber)] = true
		}
	}
	return v, nil
}

func serialKey(n *big.Int) string { return n.String() }

// Verify checks a leaf certificate (DER) and returns its identity.
func (v *Verifier) Verify(der []byte) (Identity, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	return v.VerifyCert(cert)
}

// ErrCACert means a certificate that may sign other certificates (a CA: basic
// constraints say so, or its key usage includes certificate signing) was presented as a
// client certificate. A CA certificate is public; it never identifies a client.
var ErrCACert = errors.New("a CA certificate is not a client certificate")

// VerifyCert checks a parsed leaf certificate and returns its identity.
func (v *Verifier) VerifyCert(cert *x509.Certificate) (Identity, error) {
	if cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign != 0 {
		return Identity{}, ErrCACert
	}
	now := v.now()
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return Identity{}, ErrExpired
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: v.roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var inv x509.CertificateInvalidError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return Identity{}, ErrNotClientAuth
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
	case v.revoked[serialKey(cert.SerialNumber)]:
		return Identity{}, ErrRevoked
	}
	return IdentityOf(cert), nil
}

// IdentityOf returns what a certificate names, verified or not.
func IdentityOf(cert *x509.Certificate) Identity {
	sum := sha256.Sum256(cert.Raw)
	id := Identity{DNS: cert.DNSNames, CommonName: cert.Subject.CommonName, OrgUnits: cert.Subject.OrganizationalUnit,
		Fingerprint: "sha256:" + hex.EncodeToString(sum[:]), NotAfter: cert.NotAfter}
	for _, u := range cert.URIs {
		id.URIs = append(id.URIs, u.String())
		if u.Scheme == "spiffe" {
			id.SPIFFE = append(id.SPIFFE, u.String())
		}
	}
	return id
}

// DecodeEnvoyPEM decodes attributes.source.certificate: Envoy's URL-escaped PEM of the
// client's leaf certificate. It returns the DER of the first certificate.
func DecodeEnvoyPEM(s string) ([]byte, error) {
	// PathUnescape, not QueryUnescape: a '+' in the PEM arrives escaped, and a literal
	// '+' must not turn into a space.
	raw, err := url.PathUnescape(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	return firstCertificate([]byte(raw))
}

func firstCertificate(pemBytes []byte) ([]byte, error) {
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return nil, ErrBadPEM
		}
		if b.Type == "CERTIFICATE" && len(b.Bytes) > 0 {
			return b.Bytes, nil
		}
	}
}

// ParseCertificates returns every certificate in a PEM bundle, skipping other blocks
// and certificates that do not parse.
func ParseCertificates(pemBytes []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// MatchSPIFFE reports whether id matches pattern, where a '*' path segment matches any
// one segment: spiffe://example.org/ns/*/sa/api.
func MatchSPIFFE(pattern, id string) bool {
	if !strings.HasPrefix(pattern, "spiffe://") || !strings.HasPrefix(id, "spiffe://") {
		return false
	}
	ps := strings.Split(strings.TrimPrefix(pattern, "spiffe://"), "/")
	is := strings.Split(strings.TrimPrefix(id, "spiffe://"), "/")
	if len(ps) != len(is) {
		return false
	}
	for i := range ps {
		if ps[i] != is[i] && (ps[i] != "*" || i == 0 || is[i] == "") {
			return false
		}
	}
	return true
}

package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// A small private PKI for air-gapped sites: a CA, server and client certificates signed
// by it, and CRLs. Keys are ECDSA P-384 (the CNSA suite's curve).

// IssueOptions describe a certificate to issue.
type IssueOptions struct {
	CommonName string
	Server     bool     // server auth (TLS listeners); otherwise client auth
	SPIFFEID   string   // a spiffe:// URI SAN
	DNSNames   []string // DNS SANs; IP addresses here become IP SANs
	TTL        time.Duration
}

// Bundle is a certificate and its private key, in PEM.
type Bundle struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

// NewCA makes a self-signed CA valid for ttl.
func NewCA(name string, ttl time.Duration) (Bundle, error) {
	if name == "" || ttl <= 0 {
		return Bundle{}, errors.New("certs: a CA needs a name and a positive lifetime")
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name, Organization: []string{"keygate private PKI"}},
		NotBefore:             time.Now().Add(-5 * time.Minute),
		NotAfter:              time.Now().Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return sign(tmpl, key, nil, key)
}

// Issue signs a server or client certificate with the CA in ca (certificate and key).
func Issue(ca Bundle, o IssueOptions) (Bundle, error) {
	caKey, err := parseKey(ca.KeyPEM)
	if err != nil {
		return Bundle{}, err
	}
	if ca.Cert == nil {
		if ca.Cert, err = parseCert(ca.CertPEM); err != nil {
			return Bundle{}, err
		}
	}
	if o.TTL <= 0 {
		return Bundle{}, errors.New("certs: a positive lifetime is needed")
	}
	if o.CommonName == "" && o.SPIFFEID == "" && len(o.DNSNames) == 0 {
		return Bundle{}, errors.New("certs: name the certificate: a common name, a SPIFFE ID or a DNS name")
	}
	tmpl := &x509.Certificate{
		Subject:   pkix.Name{CommonName: o.CommonName},
		NotBefore: time.Now().Add(-5 * time.Minute),
		NotAfter:  time.Now().Add(o.TTL),
		KeyUsage:  x509.KeyUsageDigitalSignature,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		return Bundle{}, fmt.Errorf("certs: the certificate would outlive its CA (%s)", ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if o.Server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	if o.SPIFFEID != "" {
		if err := checkSAN("SPIFFE ID", o.SPIFFEID); err != nil {
			return Bundle{}, err
		}
		u, err := url.Parse(o.SPIFFEID)
		if err != nil || u.Scheme != "spiffe" || u.Host == "" {
			return Bundle{}, fmt.Errorf("certs: %q is not a spiffe:// ID", o.SPIFFEID)
		}
		tmpl.URIs = []*url.URL{u}
	}
	for _, n := range o.DNSNames {
		if err := checkSAN("DNS name", n); err != nil {
			return Bundle{}, err
		}
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return Bundle{}, err
	}
	return sign(tmpl, key, ca.Cert, caKey)
}

// checkSAN refuses a SAN that headers describing the certificate could not carry
// plainly: ',' and ';' separate x-forwarded-client-cert elements and pairs, '"' and
// '\' are its quoting, and whitespace or control characters have no place in a name.
func checkSAN(what, v string) error {
	if v == "" {
		return fmt.Errorf("certs: an empty %s", what)
	}
	for _, r := range v {
		switch {
		case r == ',' || r == ';' || r == '"' || r == '\\':
			return fmt.Errorf("certs: %s %q holds %q, which certificate headers cannot carry", what, v, r)
		case unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError:
			return fmt.Errorf("certs: %s %q holds whitespace, a control character or invalid UTF-8", what, v)
		}
	}
	return nil
}

func sign(tmpl *x509.Certificate, key *ecdsa.PrivateKey, parent *x509.Certificate, signer crypto.Signer) (Bundle, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return Bundle{}, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		return Bundle{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Bundle{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return Bundle{}, err
	}
	return Bundle{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		Cert:    cert,
	}, nil
}

// Revoked is one CRL entry.
type Revoked struct {
	Serial *big.Int
	At     time.Time
}

// CRL returns a PEM CRL, signed by the CA, listing revoked, valid for nextUpdate.
func CRL(ca Bundle, number int64, revoked []Revoked, nextUpdate time.Duration) ([]byte, error) {
	caKey, err := parseKey(ca.KeyPEM)
	if err != nil {
		return nil, err
	}
	cert := ca.Cert
	if cert == nil {
		if cert, err = parseCert(ca.CertPEM); err != nil {
			return nil, err
		}
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(nextUpdate)}
	for _, r := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: r.Serial, RevocationTime: r.At})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, cert, caKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// Inspect describes a certificate as a person reads it (what openssl x509 -text tells,
// made readable) and, when caPEM is given, whether it chains to that CA for its usage.
func Inspect(certPEM, caPEM []byte, now time.Time) (string, error) {
	c, err := parseCert(certPEM)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-16s %s\n", k+":", v) }
	row("subject", c.Subject.String())
	row("issuer", c.Issuer.String())
	row("serial", c.SerialNumber.String())
	id := IdentityOf(c)
	if len(id.URIs) > 0 {
		row("URI SANs", strings.Join(id.URIs, ", "))
	}
	if len(c.DNSNames) > 0 {
		row("DNS SANs", strings.Join(c.DNSNames, ", "))
	}
	if len(c.IPAddresses) > 0 {
		var ips []string
		for _, ip := range c.IPAddresses {
			ips = append(ips, ip.String())
		}
		row("IP SANs", strings.Join(ips, ", "))
	}
	row("valid from", c.NotBefore.UTC().Format(time.RFC3339))
	row("valid until", c.NotAfter.UTC().Format(time.RFC3339))
	days := c.NotAfter.Sub(now).Hours() / 24
	switch {
	case now.Before(c.NotBefore):
		row("status", "NOT YET VALID")
	case days < 0:
		row("status", fmt.Sprintf("EXPIRED %.0f days ago", -days))
	default:
		row("status", fmt.Sprintf("valid, %.0f days to expiry", days))
	}
	row("key", publicKeyName(c))
	var usages []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			usages = append(usages, "server auth")
		case x509.ExtKeyUsageClientAuth:
			usages = append(usages, "client auth")
		}
	}
	row("usage", strings.Join(usages, ", "))
	row("CA", fmt.Sprint(c.IsCA))
	row("fingerprint", id.Fingerprint)
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return "", ErrNoCACerts
		}
		_, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			row("chain", "FAILS: "+err.Error())
		} else {
			row("chain", "ok: signed by the given CA")
		}
	}
	return b.String(), nil
}

func publicKeyName(c *x509.Certificate) string {
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		return "ECDSA " + k.Curve.Params().Name
	}
	return c.PublicKeyAlgorithm.String()
}

func parseCert(pemBytes []byte) (*x509.Certificate, error) {
	der, err := firstCertificate(pemBytes)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	return c, nil
}

func parseKey(pemBytes []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return nil, errors.New("certs: no PEM private key")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(b.Bytes); err2 == nil {
			return ek, nil
		}
		return nil, fmt.Errorf("certs: private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("certs: the private key cannot sign")
	}
	return s, nil
}

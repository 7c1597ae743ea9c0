package certs

import (
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/certtest"
)

// envoyEscape escapes a PEM the way Envoy fills attributes.source.certificate.
func envoyEscape(pem []byte) string {
	return strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(url.PathEscape(string(pem)))
}

func TestVerify(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	good := ca.Issue(t, certtest.LeafOptions{CommonName: "billing", URIs: []string{"spiffe://example.org/ns/prod/sa/billing"}, DNSNames: []string{"billing.internal"}})
	revoked := ca.Issue(t, certtest.LeafOptions{CommonName: "stolen"})
	expired := ca.Issue(t, certtest.LeafOptions{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	server := ca.Issue(t, certtest.LeafOptions{CommonName: "a-server", Server: true})
	foreign := certtest.NewCA(t, "others").Issue(t, certtest.LeafOptions{CommonName: "intruder"})
	v, err := NewVerifier(ca.CertPEM, ca.CRL(t, revoked), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		leaf *certtest.Leaf
		err  error
	}{
		"good":         {good, nil},
		"revoked":      {revoked, ErrRevoked},
		"expired":      {expired, ErrExpired},
		"server usage": {server, ErrNotClientAuth},
		"foreign CA":   {foreign, ErrUntrusted},
	} {
		t.Run(name, func(t *testing.T) {
			der, err := DecodeEnvoyPEM(envoyEscape(tc.leaf.CertPEM))
			if err != nil {
				t.Fatal(err)
			}
			id, err := v.Verify(der)
			if !errors.Is(err, tc.err) {
				t.Fatalf("Verify: %v, want %v", err, tc.err)
			}
			if tc.err == nil && (id.CommonName != "billing" || id.SPIFFE[0] != "spiffe://example.org/ns/prod/sa/billing" ||
				id.DNS[0] != "billing.internal" || !strings.HasPrefix(id.Fingerprint, "sha256:") || len(id.Fingerprint) != 71) {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	if _, err := NewVerifier(ca.CertPEM, certtest.NewCA(t, "other").CRL(t), nil); !errors.Is(err, ErrBadCRL) {
		t.Fatalf("a CRL from another CA: %v", err)
	}
	if _, err := NewVerifier([]byte("not pem"), nil, nil); !errors.Is(err, ErrNoCACerts) {
		t.Fatalf("empty bundle: %v", err)
	}
}

func TestDecodeEnvoyPEMKeepsPlus(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	leaf := ca.Issue(t, certtest.LeafOptions{})
	der, err := DecodeEnvoyPEM(envoyEscape(leaf.CertPEM))
	if err != nil || string(der) != string(leaf.Cert.Raw) {
		t.Fatalf("round trip: %v", err)
	}
	for _, bad := range []string{"", "%zz", "-----BEGIN CERTIFICATE-----%0Agarbage%0A-----END CERTIFICATE-----"} {
		if _, err := DecodeEnvoyPEM(bad); err == nil {
			t.Errorf("DecodeEnvoyPEM(%q) accepted", bad)
		}
	}
}

func TestMatchSPIFFE(t *testing.T) {
	for _, tc := range []struct {
		pattern, id string
		want        bool
	}{
		{"spiffe://example.org/ns/prod/sa/api", "spiffe://example.org/ns/prod/sa/api", true},
		{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/dev/sa/api", true},
		{"spiffe://example.org/ns/*/sa/api", "spiffe://example.org/ns/dev/sa/web", false},
		{"spiffe://example.org/ns/*", "spiffe://example.org/ns/a/b", false},
		{"spiffe://*/ns/a", "spiffe://evil.org/ns/a", false},
		{"spiffe://example.org/ns/*", "spiffe://example.org/ns/", false},
		{"https://example.org/x", "https://example.org/x", false},
	} {
		if got := MatchSPIFFE(tc.pattern, tc.id); got != tc.want {
			t.Errorf("MatchSPIFFE(%q, %q) = %v", tc.pattern, tc.id, got)
		}
	}
}

func TestParseXFCC(t *testing.T) {
	h := `By=spiffe://mesh/front;Hash=abc123;Subject="CN=billing,OU=payments,O=Example\, Inc.";URI=spiffe://example.org/ns/prod/sa/billing;DNS=a.internal;DNS=b.internal,By=spiffe://mesh/edge;URI=spiffe://example.org/x`
	els, err := ParseXFCC(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(els) != 2 {
		t.Fatalf("%d elements", len(els))
	}
	e := els[0]
	if e.By != "spiffe://mesh/front" || e.Hash != "abc123" || e.Subject != "CN=billing,OU=payments,O=Example, Inc." ||
		len(e.URI) != 1 || len(e.DNS) != 2 || e.DNS[1] != "b.internal" {
		t.Fatalf("element %+v", e)
	}
	if els[1].By != "spiffe://mesh/edge" || els[1].URI[0] != "spiffe://example.org/x" {
		t.Fatalf("second element %+v", els[1])
	}
	for _, bad := range []string{``, `,`, `By`, `By=a,,By=b`, `Subject="unterminated`, `Subject="a"b`, `=x`, `By=a"b`, `Hash="x\`} {
		if _, err := ParseXFCC(bad); !errors.Is(err, ErrBadXFCC) {
			t.Errorf("ParseXFCC(%q) = %v, want ErrBadXFCC", bad, err)
		}
	}
	// A certificate in the Cert field decodes.
	ca := certtest.NewCA(t, "clients")
	leaf := ca.Issue(t, certtest.LeafOptions{})
	els, err = ParseXFCC(`By=spiffe://mesh/front;Cert="` + envoyEscape(leaf.CertPEM) + `"`)
	if err != nil {
		t.Fatal(err)
	}
	if der, err := els[0].CertDER(); err != nil || string(der) != string(leaf.Cert.Raw) {
		t.Fatalf("Cert: %v", err)
	}
}

func TestParseClientCert(t *testing.T) {
	ca := certtest.NewCA(t, "clients")
	leaf := ca.Issue(t, certtest.LeafOptions{})
	der, err := ParseClientCert(":" + base64.StdEncoding.EncodeToString(leaf.Cert.Raw) + ":")
	if err != nil || string(der) != string(leaf.Cert.Raw) {
		t.Fatalf("ParseClientCert: %v", err)
	}
	for _, bad := range []string{"", "::", ":not base64!:", base64.StdEncoding.EncodeToString(leaf.Cert.Raw)} {
		if _, err := ParseClientCert(bad); !errors.Is(err, ErrBadClientCert) {
			t.Errorf("ParseClientCert(%q) = %v", bad, err)
		}
	}
}

func FuzzParseXFCC(f *testing.F) {
	for _, s := range []string{`By=a;Hash=b`, `Subject="CN=x,O=y\"z";URI=u,By=c`, `a=b,c=d`, `="`, `By=`, `,`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		els, err := ParseXFCC(h)
		if err != nil {
			return
		}
		// No element is empty, and no value is longer than the header.
		for _, e := range els {
			for _, v := range append([]string{e.By, e.Hash, e.Cert, e.Chain, e.Subject}, append(e.URI, e.DNS...)...) {
				if len(v) > len(h) {
					t.Fatalf("value longer than the header: %q", v)
				}
			}
		}
		if len(els) > strings.Count(h, ",")+1 {
			t.Fatalf("%d elements from %d commas", len(els), strings.Count(h, ","))
		}
	})
}

func FuzzDecodeEnvoyPEM(f *testing.F) {
	f.Add("-----BEGIN%20CERTIFICATE-----%0AMIIB%0A-----END%20CERTIFICATE-----%0A")
	f.Add("%")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		der, err := DecodeEnvoyPEM(s)
		if err == nil && len(der) == 0 {
			t.Fatal("no error and no certificate")
		}
	})
}

func FuzzParseClientCert(f *testing.F) {
	f.Add(":AAAA:")
	f.Add("::")
	f.Fuzz(func(t *testing.T, s string) {
		if der, err := ParseClientCert(s); err == nil && len(der) == 0 {
			t.Fatal("no error and no DER")
		}
	})
}

// TestIssueRefusesUnsafeSANs: a SAN that would need quoting in a certificate header, or
// holds whitespace or control characters, is refused when the certificate is issued.
func TestIssueRefusesUnsafeSANs(t *testing.T) {
	ca, err := NewCA("sites", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bad := []string{",", ";", `"`, `\`, " ", "\t", "\n", "\r", "\x00", "\x7f", "\u00a0", "\u2028", "\xff"}
	for _, c := range bad {
		spiffe := "spiffe://example.org/ns/prod/sa/web" + c + "URI=spiffe://example.org/ns/prod/sa/billing"
		if _, err := Issue(ca, IssueOptions{CommonName: "web", SPIFFEID: spiffe, TTL: time.Minute}); err == nil {
			t.Errorf("SPIFFE ID with %q was issued", c)
		}
		if _, err := Issue(ca, IssueOptions{CommonName: "web", DNSNames: []string{"web" + c + "x.internal"}, TTL: time.Minute}); err == nil {
			t.Errorf("DNS name with %q was issued", c)
		} else if !strings.Contains(err.Error(), "DNS name") {
			t.Errorf("unclear error %q", err)
		}
	}
	ok, err := Issue(ca, IssueOptions{CommonName: "web", SPIFFEID: "spiffe://example.org/ns/prod/sa/web", DNSNames: []string{"web.internal", "127.0.0.1"}, TTL: time.Minute})
	if err != nil || len(ok.Cert.URIs) != 1 || len(ok.Cert.DNSNames) != 1 || len(ok.Cert.IPAddresses) != 1 {
		t.Fatalf("a plain certificate: %v", err)
	}
}

package envoy

import (
	"context"
	"encoding/base64"
	"net/url"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/internal/certtest"
)

// envoyEscape escapes a PEM as Envoy does in attributes.source.certificate: newline,
// space, '+', '/' and '=' among the escaped characters.
func envoyEscape(pem []byte) string {
	return strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(url.PathEscape(string(pem)))
}

func withPeer(req *authv3.CheckRequest, leaf *certtest.Leaf) *authv3.CheckRequest {
	if leaf != nil {
		req.Attributes.Source.Certificate = envoyEscape(leaf.CertPEM)
		req.Attributes.Source.Principal = leaf.Cert.Subject.CommonName
	}
	return req
}

func TestClientCertificatesOverGRPC(t *testing.T) {
	ks := newKeyset(t)
	ca := certtest.NewCA(t, "clients")
	billing := ca.Issue(t, certtest.LeafOptions{CommonName: "billing", URIs: []string{"spiffe://example.org/ns/prod/sa/billing"}})
	revoked := ca.Issue(t, certtest.LeafOptions{CommonName: "stolen laptop"})
	expired := ca.Issue(t, certtest.LeafOptions{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	proxy := ca.Issue(t, certtest.LeafOptions{CommonName: "front", URIs: []string{"spiffe://example.org/ns/edge/sa/front-proxy"}})
	proxy9440 := ca.Issue(t, certtest.LeafOptions{CommonName: "lb", URIs: []string{"spiffe://example.org/ns/edge/sa/lb"}})
	foreign := certtest.NewCA(t, "elsewhere").Issue(t, certtest.LeafOptions{CommonName: "intruder"})
	verifier, err := certs.NewVerifier(ca.CertPEM, ca.CRL(t, revoked), nil)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat(prefix)
	bound, boundRec, err := f.Issue(authz.KeySpec{Name: "bound", Owner: "acct_42", BoundCert: "spiffe://example.org/ns/prod/sa/billing"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.store.Create(context.Background(), boundRec); err != nil {
		t.Fatal(err)
	}
	engine, err := authz.New(authz.Config{Format: f, Lookup: ks.store, Profile: authz.ProfileMagicx,
		Policy: authz.Policy{Routes: []authz.Route{{Name: "secret", Prefix: "/secret/", RequireClientCert: true}},
			DenyUnmatched: new(bool)},
		IdentityRules: []authz.IdentityRule{{Name: "billing", SPIFFE: "spiffe://example.org/ns/*/sa/billing", Scopes: []string{"ledger:write"}}}})
	if err != nil {
		t.Fatal(err)
	}
	usage := &usageLog{}
	client := serve(t, newServer(t, engine, Options{ClientCerts: func() *certs.Verifier { return verifier },
		TrustForwardedFrom: []TrustedProxy{{ID: "spiffe://example.org/ns/edge/sa/front-proxy", Header: ForwardXFCC},
			{ID: "spiffe://example.org/ns/edge/sa/lb", Header: "Client-Cert"}}, Usage: usage}))
	t.Cleanup(func() {
		for _, id := range usage.ids {
			if !authz.ValidKeyID(id) {
				t.Errorf("usage recorded for %q, which is not a key", id)
			}
		}
	})

	xfcc := func(leaf *certtest.Leaf) string {
		return `By=spiffe://example.org/ns/edge/sa/front-proxy;Hash=x;Subject="CN=` + leaf.Cert.Subject.CommonName + `,O=Example\, Inc.";Cert="` + envoyEscape(leaf.CertPEM) + `"`
	}
	for name, tc := range map[string]struct {
		headers map[string]string
		peer    *certtest.Leaf
		path    string
		status  int
		keyID   string // on allow, x-api-key-id
		reason  authz.Reason
	}{
		"key, no cert, open route":        {map[string]string{"x-api-key": ks.active}, nil, "/v1/models", 200, ks.activeRec.ID, 0},
		"key, no cert, mTLS route":        {map[string]string{"x-api-key": ks.active}, nil, "/secret/x", 403, "", authz.ReasonClientCertRequired},
		"key and cert, mTLS route":        {map[string]string{"x-api-key": ks.active}, billing, "/secret/x", 200, ks.activeRec.ID, 0},
		"CRL-revoked cert":                {map[string]string{"x-api-key": ks.active}, revoked, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"expired cert":                    {map[string]string{"x-api-key": ks.active}, expired, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"cert from another CA":            {map[string]string{"x-api-key": ks.active}, foreign, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"cert alone, identity rule":       {nil, billing, "/v1/models", 200, "cert:billing", 0},
		"cert alone, no rule":             {nil, proxy, "/v1/models", 401, "", authz.ReasonMissing},
		"bound key, its cert":             {map[string]string{"x-api-key": bound}, billing, "/v1/models", 200, boundRec.ID, 0},
		"bound key, another cert":         {map[string]string{"x-api-key": bound}, proxy, "/v1/models", 401, "", authz.ReasonCertMismatch},
		"bound key, no cert (stolen)":     {map[string]string{"x-api-key": bound}, nil, "/v1/models", 401, "", authz.ReasonCertMismatch},
		"XFCC from the trusted proxy":     {map[string]string{"x-forwarded-client-cert": xfcc(billing)}, proxy, "/v1/models", 200, "cert:billing", 0},
		"XFCC from an untrusted client":   {map[string]string{"x-forwarded-client-cert": xfcc(billing)}, revoked, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"XFCC from a client not a proxy":  {map[string]string{"x-forwarded-client-cert": xfcc(billing)}, billing, "/secret/x", 200, "cert:billing", 0},
		"XFCC naming a revoked cert":      {map[string]string{"x-forwarded-client-cert": xfcc(revoked), "x-api-key": ks.active}, proxy, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"garbled XFCC from the proxy":     {map[string]string{"x-forwarded-client-cert": `By="unterminated`, "x-api-key": ks.active}, proxy, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
		"RFC 9440 Client-Cert from proxy": {map[string]string{"client-cert": ":" + base64.StdEncoding.EncodeToString(billing.Cert.Raw) + ":"}, proxy9440, "/v1/models", 200, "cert:billing", 0},
		// Each proxy's other header is ignored: a client behind an Envoy front proxy
		// (which sanitizes XFCC only) cannot pass itself off through Client-Cert.
		"Client-Cert through an XFCC proxy": {map[string]string{"client-cert": ":" + base64.StdEncoding.EncodeToString(billing.Cert.Raw) + ":"}, proxy, "/v1/models", 401, "", authz.ReasonMissing},
		"Client-Cert through it, bound key": {map[string]string{"client-cert": ":" + base64.StdEncoding.EncodeToString(billing.Cert.Raw) + ":", "x-api-key": bound}, proxy, "/v1/models", 401, "", authz.ReasonCertMismatch},
		"XFCC through a Client-Cert proxy":  {map[string]string{"x-forwarded-client-cert": xfcc(billing)}, proxy9440, "/v1/models", 401, "", authz.ReasonMissing},
		"both headers, XFCC proxy":          {map[string]string{"x-forwarded-client-cert": xfcc(billing), "client-cert": ":" + base64.StdEncoding.EncodeToString(proxy.Cert.Raw) + ":"}, proxy, "/v1/models", 200, "cert:billing", 0},
		"forged XFCC via an intruder cert":  {map[string]string{"x-forwarded-client-cert": xfcc(billing)}, foreign, "/v1/models", 403, "", authz.ReasonClientCertInvalid},
	} {
		t.Run(name, func(t *testing.T) {
			req := withPeer(envoyRequest(t, tc.headers), tc.peer)
			req.Attributes.Request.Http.Path = tc.path
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if tc.status == 200 {
				ok := resp.GetOkResponse()
				if ok == nil {
					t.Fatalf("denied: %s", resp.GetDeniedResponse().GetBody())
				}
				if id := headerMap(ok.GetHeaders())["x-api-key-id"]; id != tc.keyID {
					t.Fatalf("x-api-key-id %q, want %q", id, tc.keyID)
				}
				return
			}
			dr := resp.GetDeniedResponse()
			if int(dr.GetStatus().GetCode()) != tc.status {
				t.Fatalf("status %v, want %d: %s", dr.GetStatus().GetCode(), tc.status, dr.GetBody())
			}
			if want := golden(t, authz.ProfileMagicx, tc.reason, authz.Record{}); dr.GetBody() != want {
				t.Fatalf("body %s, want %s", dr.GetBody(), want)
			}
		})
	}
}

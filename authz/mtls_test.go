package authz

import (
	"context"
	"fmt"
	"testing"
	"time"
)

var billingPeer = Peer{Presented: true, Verified: true, SPIFFE: []string{"spiffe://example.org/ns/prod/sa/billing"},
	DNS: []string{"billing.prod.internal"}, CommonName: "billing", OrgUnits: []string{"payments"},
	Fingerprint: "sha256:" + fmt.Sprintf("%064x", 42)}

func mtlsFixture(t testing.TB, p Profile, mtls bool) *fixture {
	fx := newFixture(t, p)
	bind := func(id, bound string) string {
		key, err := fx.engine.format.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		r := fx.lookup.records[HashKey(fx.active)]
		r.ID, r.Hash, r.BoundCert = id, HashKey(key), bound
		fx.lookup.records[r.Hash] = r
		return key
	}
	fx.boundFP = bind("key_BoundToCertFP00", billingPeer.Fingerprint)
	fx.boundSPIFFE = bind("key_BoundToSPIFFE00", "spiffe://example.org/ns/prod/sa/billing")
	var err error
	fx.engine, err = New(Config{Format: fx.engine.format, Lookup: fx.lookup, Profile: p, Now: func() time.Time { return testNow },
		RequireClientCert: mtls,
		Policy: Policy{Routes: []Route{
			{Name: "secret", Prefix: "/secret/", RequireClientCert: true},
			{Name: "ledger", Prefix: "/ledger/", Scope: "ledger:write"},
		}, DenyUnmatched: ptr(false)},
		IdentityRules: []IdentityRule{
			{Name: "billing", SPIFFE: "spiffe://example.org/ns/*/sa/billing", OrgUnit: "payments", Scopes: []string{"ledger:write"}},
			{Name: "internal", DNS: "*.prod.internal", Scopes: []string{"read"}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func TestClientCertificates(t *testing.T) {
	stranger := Peer{Presented: true, Verified: true, SPIFFE: []string{"spiffe://example.org/ns/prod/sa/other"}, Fingerprint: "sha256:" + fmt.Sprintf("%064x", 7)}
	onlyDNS := Peer{Presented: true, Verified: true, DNS: []string{"search.prod.internal"}, Fingerprint: "sha256:" + fmt.Sprintf("%064x", 9)}
	for name, tc := range map[string]struct {
		mtls bool
		req  func(fx *fixture) Request
		want Reason
		id   string
	}{
		"key without cert, mTLS off":         {false, func(fx *fixture) Request { return Request{APIKey: fx.active} }, ReasonAllowed, "key_Active0000000000"},
		"key without cert, mTLS required":    {true, func(fx *fixture) Request { return Request{APIKey: fx.active} }, ReasonClientCertRequired, ""},
		"key and cert, mTLS required":        {true, func(fx *fixture) Request { return Request{APIKey: fx.active, Peer: stranger} }, ReasonAllowed, "key_Active0000000000"},
		"unverified cert":                    {false, func(fx *fixture) Request { return Request{APIKey: fx.active, Peer: Peer{Presented: true}} }, ReasonClientCertInvalid, ""},
		"route requires a cert":              {false, func(fx *fixture) Request { return Request{APIKey: fx.active, Path: "/secret/x"} }, ReasonClientCertRequired, ""},
		"cert alone, rule grants":            {false, func(fx *fixture) Request { return Request{Peer: billingPeer, Method: "POST", Path: "/ledger/entries"} }, ReasonAllowed, "cert:billing"},
		"cert alone, rule lacks the scope":   {false, func(fx *fixture) Request { return Request{Peer: onlyDNS, Method: "POST", Path: "/ledger/entries"} }, ReasonInsufficientScope, "cert:internal"},
		"cert alone, DNS rule, read":         {false, func(fx *fixture) Request { return Request{Peer: onlyDNS, Method: "GET", Path: "/ledger/entries"} }, ReasonAllowed, "cert:internal"},
		"cert alone, no rule":                {false, func(fx *fixture) Request { return Request{Peer: stranger} }, ReasonMissing, ""},
		"bound by fingerprint, right cert":   {false, func(fx *fixture) Request { return Request{APIKey: fx.boundFP, Peer: billingPeer} }, ReasonAllowed, "key_BoundToCertFP00"},
		"bound by fingerprint, other cert":   {false, func(fx *fixture) Request { return Request{APIKey: fx.boundFP, Peer: stranger} }, ReasonCertMismatch, ""},
		"bound by fingerprint, no cert":      {false, func(fx *fixture) Request { return Request{APIKey: fx.boundFP} }, ReasonCertMismatch, ""},
		"bound by SPIFFE ID, right identity": {false, func(fx *fixture) Request { return Request{APIKey: fx.boundSPIFFE, Peer: billingPeer} }, ReasonAllowed, "key_BoundToSPIFFE00"},
		"bound by SPIFFE ID, other identity": {false, func(fx *fixture) Request { return Request{APIKey: fx.boundSPIFFE, Peer: stranger} }, ReasonCertMismatch, ""},
	} {
		t.Run(name, func(t *testing.T) {
			fx := mtlsFixture(t, ProfileMagicx, tc.mtls)
			req := envoyShaped(tc.req(fx))
			before := fx.lookup.calls.Load()
			d, err := fx.engine.Check(context.Background(), &req)
			if err != nil || d.Reason != tc.want || d.Record.ID != tc.id {
				t.Fatalf("got %v %q, %v; want %v %q", d.Reason, d.Record.ID, err, tc.want, tc.id)
			}
			if (tc.want == ReasonClientCertRequired || tc.want == ReasonClientCertInvalid) && fx.lookup.calls.Load() != before {
				t.Fatal("a request refused for its certificate reached the store")
			}
		})
	}
}

func TestClientCertBodiesGolden(t *testing.T) {
	for p := Profile(0); p < numProfiles; p++ {
		fx := mtlsFixture(t, p, true)
		for r, req := range map[Reason]Request{
			ReasonClientCertRequired: {APIKey: fx.active},
			ReasonClientCertInvalid:  {APIKey: fx.active, Peer: Peer{Presented: true}},
			ReasonCertMismatch:       {APIKey: fx.boundFP, Peer: Peer{Presented: true, Verified: true, Fingerprint: "sha256:00"}},
		} {
			t.Run(fmt.Sprintf("%v/%v", p, r), func(t *testing.T) {
				req := envoyShaped(req)
				d, err := fx.engine.Check(context.Background(), &req)
				if err != nil || d.Reason != r {
					t.Fatalf("got %v %v, want %v", d.Reason, err, r)
				}
				checkGolden(t, GoldenPath(p, r), d.Denial.Body)
			})
		}
	}
}

// envoyShaped gives a request the method and path Envoy always sends.
func envoyShaped(r Request) Request {
	if r.Method == "" {
		r.Method = "GET"
	}
	if r.Path == "" {
		r.Path = "/"
	}
	return r
}

func TestIdentityRulesValidated(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	for name, r := range map[string]IdentityRule{
		"matches everything": {Name: "all", Scopes: []string{"admin"}},
		"no name":            {CommonName: "x"},
		"bad scope":          {Name: "x", CommonName: "x", Scopes: []string{"a b"}},
	} {
		if _, err := New(Config{Format: f, Lookup: &memLookup{}, IdentityRules: []IdentityRule{r}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

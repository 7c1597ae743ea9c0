package admin

import (
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz/audit"
)

// auditEvents calls GET /audit with the key and query, and decodes the answer.
func (fx *fixture) auditEvents(t *testing.T, key, query string) ([]audit.Event, bool) {
	t.Helper()
	status, _, _, raw := fx.call(t, key, "GET", "/audit?"+query, "")
	var resp struct {
		Events    []audit.Event `json:"events"`
		Truncated *bool         `json:"truncated"`
	}
	if err := json.Unmarshal([]byte(raw), &resp); status != 200 || err != nil || resp.Events == nil || resp.Truncated == nil {
		t.Fatalf("GET /audit?%s: %d %s", query, status, raw)
	}
	return resp.Events, *resp.Truncated
}

// auditFixture is a fixture whose log holds events of two owners and of none: admin
// calls through the API (allowed and refused), and the check path's events.
func auditFixture(t *testing.T) *fixture {
	fx := newFixture(t)
	fx.call(t, fx.owner, "GET", "/api-keys", "")                    // admin.call, acct_a
	fx.call(t, fx.plain, "GET", "/api-keys", "")                    // refused admin.call, acct_a's key without scope
	fx.call(t, fx.admin, "GET", "/api-keys/"+fx.otherRec.ID, "")    // admin.call, acct_ops
	fx.call(t, "", "GET", "/api-keys", "")                          // refused admin.call, nobody's
	fx.call(t, fx.admin, "DELETE", "/api-keys/"+fx.otherRec.ID, "") // key.revoked, acct_b
	fx.call(t, fx.otherB, "GET", "/api-keys", "")                   // refused: revoked, acct_b's
	fx.log.Write(audit.Event{Event: audit.AuthFailed, Reason: "unknown_key", Status: 401, Source: "10.0.0.9:1"})
	fx.log.Write(audit.Event{Event: audit.SpraySuspected, Source: "10.0.0.9", Status: 429})
	fx.log.Write(audit.Event{Event: audit.AuthFailed, Reason: "insufficient_scope", Status: 403,
		KeyID: fx.plainRec.ID, Owner: "acct_a"})
	fx.log.Write(audit.Event{Event: audit.AuthFailed, Reason: "revoked_key", Status: 401,
		KeyID: fx.otherRec.ID, Owner: "acct_b"})
	return fx
}

func TestAuditScoping(t *testing.T) {
	fx := auditFixture(t)
	all, truncated := fx.auditEvents(t, fx.admin, "limit=1000")
	if truncated || len(all) < 10 {
		t.Fatalf("admin sees %d events, truncated %v", len(all), truncated)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Time.After(all[i-1].Time) {
			t.Fatalf("not newest first: %v after %v", all[i].Time, all[i-1].Time)
		}
	}
	owners := map[string]int{}
	for _, e := range all {
		owners[e.Owner]++
	}
	if owners[""] == 0 || owners["acct_a"] == 0 || owners["acct_b"] == 0 || owners["acct_ops"] == 0 {
		t.Fatalf("admin sees events of %v", owners)
	}
	// A refused known key is its owner's event: acct_a's key without the scope, acct_b's
	// revoked key.
	refused := 0
	for _, e := range all {
		if e.Event == audit.AdminCall && e.Status >= 400 && e.Actor != "" {
			refused++
			if (e.Actor == fx.plainRec.ID) != (e.Owner == "acct_a") || (e.Actor == fx.otherRec.ID) != (e.Owner == "acct_b") {
				t.Fatalf("refused call %+v", e)
			}
		}
	}
	if refused != 2 {
		t.Fatalf("%d refused admin calls of known keys, want 2", refused)
	}

	// An api-keys caller of acct_a: its own owner's events, whatever it asks.
	mine := 0
	for _, q := range []string{"", "limit=1000", "owner=acct_a", "event=auth.failed,auth.spray_suspected,admin.call",
		"key_id=" + fx.otherRec.ID, "reason=unknown_key", "event=auth.spray_suspected", "reason=revoked_key",
		"owner=acct_a&key_id=" + fx.otherRec.ID, "from=2000-01-01T00:00:00Z"} {
		evs, _ := fx.auditEvents(t, fx.owner, q)
		for _, e := range evs {
			if e.Owner != "acct_a" {
				t.Fatalf("acct_a's caller (?%s) sees %+v", q, e)
			}
		}
		if q == "" {
			mine = len(evs)
		}
	}
	if mine < 3 {
		t.Fatalf("acct_a's caller sees %d of its events, want its admin calls and its failure", mine)
	}
	if evs, _ := fx.auditEvents(t, fx.owner, "reason=insufficient_scope&event=auth.failed"); len(evs) != 1 || evs[0].KeyID != fx.plainRec.ID {
		t.Fatalf("acct_a's own failure: %+v", evs)
	}
	for _, owner := range []string{"acct_b", "", "%20", "acct_a,acct_b", "ACCT_A"} {
		status, _, _, raw := fx.call(t, fx.owner, "GET", "/audit?owner="+owner+"&owner=acct_a", "")
		if status != 400 {
			t.Fatalf("owner twice: %d %s", status, raw)
		}
		if owner == "" {
			continue
		}
		if status, _, _, raw := fx.call(t, fx.owner, "GET", "/audit?owner="+owner, ""); status != 403 || !strings.Contains(raw, "FORBIDDEN") {
			t.Fatalf("owner=%s: %d %s", owner, status, raw)
		}
	}
	// A caller without the scope, or without a key, gets the deny profile's answer.
	for _, key := range []string{"", fx.plain} {
		if status, _, _, raw := fx.call(t, key, "GET", "/audit", ""); status != 401 && status != 403 || strings.Contains(raw, "events") {
			t.Fatalf("refused caller: %d %s", status, raw)
		}
	}
	// The admin filters.
	for q, want := range map[string]func(audit.Event) bool{
		"event=key.revoked":                      func(e audit.Event) bool { return e.Event == audit.KeyRevoked },
		"event=key.revoked&event=auth.failed":    func(e audit.Event) bool { return e.Event == audit.KeyRevoked || e.Event == audit.AuthFailed },
		"event=auth.spray_suspected,key.revoked": func(e audit.Event) bool { return e.Event == audit.SpraySuspected || e.Event == audit.KeyRevoked },
		"owner=acct_b":                           func(e audit.Event) bool { return e.Owner == "acct_b" },
		"key_id=" + fx.plainRec.ID:               func(e audit.Event) bool { return e.KeyID == fx.plainRec.ID },
		"reason=unknown_key":                     func(e audit.Event) bool { return e.Reason == "unknown_key" },
	} {
		evs, _ := fx.auditEvents(t, fx.admin, q)
		n := 0
		for _, e := range all {
			if want(e) {
				n++
			}
		}
		if len(evs) != n || n == 0 {
			t.Fatalf("?%s: %d events, want %d", q, len(evs), n)
		}
		for _, e := range evs {
			if !want(e) {
				t.Fatalf("?%s: %+v", q, e)
			}
		}
	}
	// Limits and times.
	if evs, truncated := fx.auditEvents(t, fx.admin, "limit=2"); len(evs) != 2 || !truncated || evs[0].Time.Before(all[0].Time) {
		t.Fatalf("limit=2: %d, truncated %v", len(evs), truncated)
	}
	cut := all[len(all)/2].Time
	from := url.QueryEscape(cut.Format(time.RFC3339Nano))
	evs, _ := fx.auditEvents(t, fx.admin, "limit=1000&from="+from)
	if len(evs) == 0 {
		t.Fatal("from: none")
	}
	for _, e := range evs {
		if e.Time.Before(cut) {
			t.Fatalf("from %v: %+v", cut, e)
		}
	}
	to := url.QueryEscape(cut.Format(time.RFC3339Nano))
	evs, _ = fx.auditEvents(t, fx.admin, "limit=1000&to="+to)
	before := 0
	for _, e := range all {
		if e.Time.Before(cut) {
			before++
		}
	}
	if len(evs) != before || before == 0 {
		t.Fatalf("to %v: %d events, want the %d before it", cut, len(evs), before)
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339))
	if evs, _ := fx.auditEvents(t, fx.admin, "from="+future); len(evs) != 0 {
		t.Fatalf("from the future: %d", len(evs))
	}
	if evs, _ := fx.auditEvents(t, fx.admin, "to=2000-01-01T00:00:00Z"); len(evs) != 0 {
		t.Fatalf("to the past: %d", len(evs))
	}
}

func TestAuditParameters(t *testing.T) {
	fx := newFixture(t)
	long := strings.Repeat("k", maxAuditValue+1)
	for name, q := range map[string]string{
		"unknown parameter":  "colour=red",
		"unknown kind":       "event=key.deleted",
		"kind in capitals":   "event=KEY.REVOKED",
		"empty kind":         "event=",
		"empty in a list":    "event=key.revoked,,auth.failed",
		"kind with a space":  "event=key.revoked,%20auth.failed",
		"limit zero":         "limit=0",
		"limit negative":     "limit=-1",
		"limit too big":      "limit=1001",
		"limit huge":         "limit=99999999999999999999",
		"limit not a number": "limit=ten",
		"limit twice":        "limit=1&limit=2",
		"key_id twice":       "key_id=a&key_id=b",
		"from not RFC 3339":  "from=yesterday",
		"to a date only":     "to=2026-11-24",
		"from after to":      "from=2026-11-24T11:00:00Z&to=2026-11-24T10:00:00Z",
		"from equals to":     "from=2026-11-24T10:00:00Z&to=2026-11-24T10:00:00Z",
		"bad escape":         "event=%zz",
		"semicolon":          "limit=1;event=key.revoked",
		"long value":         "key_id=" + long,
		"long query":         strings.Repeat("event=key.revoked&", 300),
		"a pasted key":       "key_id=" + fx.admin + "&from=" + fx.admin,
	} {
		t.Run(name, func(t *testing.T) {
			for _, key := range []string{fx.admin, fx.owner} {
				status, _, _, raw := fx.call(t, key, "GET", "/audit?"+q, "")
				if status != 400 || !strings.Contains(raw, `"INVALID_REQUEST"`) {
					t.Fatalf("%d %s", status, raw)
				}
				if strings.Contains(raw, fx.admin[7:33]) {
					t.Fatalf("the answer quotes a key: %s", raw)
				}
			}
		})
	}
	for _, q := range []string{"", "limit=1000", "limit=1", "event=key.revoked&event=key.revoked", "reason=", "key_id=" + strings.Repeat("k", maxAuditValue),
		"from=2026-11-24T10:00:00%2B14:00", "to=2026-11-24T10:00:00.5Z"} {
		if status, _, _, raw := fx.call(t, fx.admin, "GET", "/audit?"+q, ""); status != 200 {
			t.Fatalf("?%s: %d %s", q, status, raw)
		}
	}
}

// TestAuditDisabled: without kept events the route says so, as the usage routes do.
func TestAuditDisabled(t *testing.T) {
	fx := newFixture(t)
	for _, log := range []*audit.Log{nil, audit.New(fx.audit)} {
		srv := httptest.NewServer(New(Config{Engine: fx.engine, Store: fx.store, Format: fx.format, Audit: log}))
		fx.url, fx.client = srv.URL, srv.Client()
		status, _, _, raw := fx.call(t, fx.admin, "GET", "/audit", "")
		srv.Close()
		if status != 501 || !strings.Contains(raw, `"AUDIT_DISABLED"`) {
			t.Fatalf("%d %s", status, raw)
		}
	}
}

// TestAuditRingBound: the route answers from at most audit_recent events, the newest.
func TestAuditRingBound(t *testing.T) {
	fx := newFixture(t)
	log := audit.New(fx.audit, audit.WithRecent(5))
	srv := httptest.NewServer(New(Config{Engine: fx.engine, Store: fx.store, Format: fx.format, Audit: log}))
	defer srv.Close()
	fx.url, fx.client = srv.URL, srv.Client()
	for range 8 {
		fx.call(t, fx.admin, "GET", "/api-keys/"+fx.plainRec.ID, "")
	}
	evs, truncated := fx.auditEvents(t, fx.admin, "limit=1000")
	if len(evs) != 5 || truncated {
		t.Fatalf("%d events, truncated %v, want the 5 kept", len(evs), truncated)
	}
	if lines := strings.Count(fx.audit.String(), "\n"); lines < 9 {
		t.Fatalf("the file has %d lines", lines)
	}
}

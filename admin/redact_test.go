package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
)

// TestPastedKeysStayOutOfTheAuditLog pastes keys where ids, field names and scopes
// belong, with every caller and none, and greps the audit log and the answers for each
// key's random part.
func TestPastedKeysStayOutOfTheAuditLog(t *testing.T) {
	fx := newFixture(t)
	valid, _ := fx.mk(t, authz.KeySpec{Name: "pasted", Owner: "acct_a", Scopes: []string{"chat:completions"}})
	invented, err := fx.format.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	badSum := invented[:len(invented)-1] + string("ab"[strings.IndexByte("ab", invented[len(invented)-1])+1&1])
	pasted := []string{valid, invented, badSum}
	percent := func(s string) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}
	var paths, bodies []string
	for _, k := range pasted {
		body := k[len("mgx-sk-"):]
		paths = append(paths,
			"/api-keys/"+k,
			"/api-keys/"+k+"/rotate",
			"/api-keys/"+percent(k),                    // every byte percent-encoded
			"/api-keys/mgx%2Dsk%2D"+body,               // the prefix encoded
			"/api-keys/MGX-SK-"+body,                   // the prefix in upper case
			"/api-keys/"+body,                          // no prefix
			"/api-keys/x"+k+"y",                        // inside an id
			"/api-keys/mgx-sk-"+k,                      // the prefix twice
			"/api-keys/key_"+body[:16]+"/"+k+"/rotate", // unrouted: the mux answers 404 unaudited
		)
		bodies = append(bodies,
			`{"`+k+`":1}`,                               // an unknown field quoted by the JSON error
			`{"name":"x","scopes":["`+k+`"]}`,           // a scope quoted by the bounds check
			`{"name":"x","models":["`+k+`"]}`,           // a model quoted by the bounds check
			`{"name":"x","owner":"`+k+`"}`,              // an owner quoted by the ownership check
			`{"name":"x","expires_in":"`+k+`"}`,         // a duration
			`{"name":"x","bind_cert":"spiffe://`+k+`"}`, // a binding
		)
	}
	var answers strings.Builder
	for _, caller := range []string{"", fx.plain, fx.owner, fx.admin} {
		for _, p := range paths {
			for _, method := range []string{"GET", "DELETE", "POST"} {
				_, _, _, raw := fx.call(t, caller, method, p, "")
				answers.WriteString(raw)
			}
		}
		for _, b := range bodies {
			_, _, _, raw := fx.call(t, caller, "POST", "/api-keys", b)
			answers.WriteString(raw)
		}
		// As a key, in the credential headers, by a caller that is refused.
		_, _, _, raw := fx.callWith(t, fx.client, "", "GET", "/api-keys", "", http.Header{"X-Api-Key": {badSum}})
		answers.WriteString(raw)
	}
	// GET /audit answers what the log holds: the hint where a key was pasted.
	_, _, _, recent := fx.call(t, fx.admin, "GET", "/audit?limit=1000&event=admin.call", "")
	if !strings.Contains(recent, `"path":"/api-keys/`+fx.format.Hint(valid)+`"`) {
		t.Fatalf("no redacted path in GET /audit:\n%.2000s", recent)
	}
	answers.WriteString(recent)
	log := fx.audit.String()
	if !strings.Contains(log, `"path":"/api-keys/mgx-sk-...`) {
		t.Fatalf("no redacted path in the audit log:\n%.2000s", log)
	}
	for _, k := range pasted {
		random := k[len("mgx-sk-") : len("mgx-sk-")+authz.RandomLen]
		if strings.Contains(log, random) {
			i := strings.Index(log, random)
			t.Fatalf("the audit log holds %s...: %s", k[:10], log[max(0, i-300):min(len(log), i+100)])
		}
		if a := answers.String(); strings.Contains(a, random) {
			i := strings.Index(a, random)
			t.Fatalf("an answer holds %s...: %s", k[:10], a[max(0, i-300):min(len(a), i+100)])
		}
	}
	fx.checkAudit(t, audit.AdminCall)
}

// TestOversizedRequestID sends a 600 KB X-Request-Id: it is neither echoed nor audited.
// The engine bounds request ids (an invalid one is replaced by a generated one); the
// API echoes and audits the decision's id.
func TestOversizedRequestID(t *testing.T) {
	fx := newFixture(t)
	huge := strings.Repeat("r", 600<<10)
	for _, key := range []string{"", fx.plain, fx.admin} {
		status, h, _, _ := fx.callWith(t, fx.client, key, "GET", "/api-keys", "", http.Header{"X-Request-Id": {huge}})
		if status == 0 || len(h.Get("X-Request-Id")) > 256 || h.Get("X-Request-Id") == "" {
			t.Fatalf("caller %q: %d, X-Request-Id of %d bytes echoed", key, status, len(h.Get("X-Request-Id")))
		}
	}
	if log := fx.audit.String(); strings.Contains(log, huge[:1024]) {
		t.Fatalf("the audit log holds the request id (%d bytes)", len(log))
	}
}

// TestLastUse: admin calls record their caller's use, and GET and list show
// last_used_at, null for a key never used.
func TestLastUse(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	if status, _, _, raw := fx.call(t, fx.admin, "GET", "/api-keys", ""); status != 200 {
		t.Fatalf("list: %d %s", status, raw)
	}
	if status, _, _, _ := fx.call(t, fx.plain, "GET", "/api-keys", ""); status != 403 {
		t.Fatalf("a caller without the scope: %d", status)
	}
	if err := fx.usage.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	last, err := fx.store.LastUsed(ctx, fx.adminRec.ID)
	if err != nil || last.IsZero() || time.Since(last) > time.Minute {
		t.Fatalf("the admin call left no last use: %v %v", last, err)
	}
	_, _, _, raw := fx.call(t, fx.admin, "GET", "/api-keys/"+fx.adminRec.ID, "")
	var v View
	if err := json.Unmarshal([]byte(raw), &v); err != nil || v.LastUsedAt == nil || !v.LastUsedAt.Equal(last) {
		t.Fatalf("GET: %s", raw)
	}
	_, _, _, raw = fx.call(t, fx.admin, "GET", "/api-keys/"+fx.otherRec.ID, "")
	if !strings.Contains(raw, `"last_used_at":null`) {
		t.Fatalf("GET of a key never used: %s", raw)
	}
	if fx.call(t, fx.plain, "GET", "/api-keys", ""); fx.usage.Flush(ctx) != nil {
		t.Fatal("flush")
	}
	if last, _ := fx.store.LastUsed(ctx, fx.plainRec.ID); !last.IsZero() {
		t.Fatal("a refused admin call recorded a use")
	}
	_, _, _, raw = fx.call(t, fx.admin, "GET", "/api-keys", "")
	var list []View
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatal(err)
	}
	for _, v := range list {
		if (v.ID == fx.adminRec.ID) != (v.LastUsedAt != nil) {
			t.Fatalf("list: %s has last_used_at %v", v.ID, v.LastUsedAt)
		}
	}
}

// TestOwnerListReadsOnlyTheOwner counts the Vault requests of an api-keys caller's list
// while another owner has many keys.
func TestOwnerListReadsOnlyTheOwner(t *testing.T) {
	fx := newFixture(t)
	var others []authz.Record
	for i := range 12 {
		_, rec := fx.mk(t, authz.KeySpec{Name: fmt.Sprintf("b%d", i), Owner: "acct_b"})
		others = append(others, rec)
	}
	list := func() ([]View, []string) {
		fx.mu.Lock()
		fx.vaultCalls = nil
		fx.mu.Unlock()
		status, _, _, raw := fx.call(t, fx.owner, "GET", "/api-keys", "")
		var views []View
		if err := json.Unmarshal([]byte(raw), &views); status != 200 || err != nil {
			t.Fatalf("list: %d %s", status, raw)
		}
		fx.mu.Lock()
		defer fx.mu.Unlock()
		return views, fx.vaultCalls
	}
	list() // the first owner listing completes the owner index
	views, calls := list()
	if len(views) != 2 {
		t.Fatalf("%d keys, want acct_a's 2", len(views))
	}
	// The caller's key, one list, and per key its id, its record and its last use.
	if want := 1 + 1 + 3*len(views); len(calls) != want {
		t.Fatalf("%d Vault requests, want %d:\n%s", len(calls), want, strings.Join(calls, "\n"))
	}
	for _, c := range calls {
		for _, r := range append(others, fx.otherRec) {
			if strings.Contains(c, r.ID) || strings.Contains(c, r.Hash.String()) {
				t.Fatalf("acct_a's list read acct_b's %s", c)
			}
		}
	}
}

package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/certtest"
)

const webSPIFFE = "spiffe://example.org/ns/prod/sa/web"

// TestMintedKeysStayWithinTheCaller creates keys through the API as callers of every
// shape and checks each answer, and the stored record, against the caller's bounds.
func TestMintedKeysStayWithinTheCaller(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	expiry := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	narrow, narrowRec := fx.mk(t, authz.KeySpec{Name: "narrow", Owner: "acct_n",
		Scopes: []string{ScopeAPIKeys, "chat:*", "models:read"}, Models: []string{"gpt-4o-mini", "claude-*"},
		ExpiresAt: expiry, BoundCert: webSPIFFE, Plan: "pro"})
	wide, wideRec := fx.mk(t, authz.KeySpec{Name: "wide", Owner: "acct_w", Scopes: []string{ScopeAPIKeys, "*"}})
	web := fx.ca.Issue(t, certtest.LeafOptions{CommonName: "web", URIs: []string{webSPIFFE}})
	robot := fx.ca.Issue(t, certtest.LeafOptions{CommonName: "robot", URIs: []string{certRuleSPIFFE}})
	webClient, robotClient := fx.clientWith(web), fx.clientWith(robot)
	robotFP := "sha256:" + sha256Hex(robot.Cert.Raw)

	type want struct {
		status  int
		scopes  string // comma-joined, when 201
		models  string
		expires *time.Time // nil: never
		bound   string
		plan    string
		owner   string
	}
	never := (*time.Time)(nil)
	in := func(d time.Duration) *time.Time { x := time.Now().Add(d); return &x }
	n := func(scopes, models string, exp *time.Time) want {
		return want{201, scopes, models, exp, webSPIFFE, "pro", "acct_n"}
	}
	forbidden := want{status: 403}
	for name, tc := range map[string]struct {
		caller string // narrow, wide, admin, robot
		body   string
		want   want
	}{
		// scopes
		"narrow: a held scope":             {"narrow", `{"name":"a","scopes":["models:read"]}`, n("models:read", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: under its wildcard":       {"narrow", `{"name":"a","scopes":["chat:completions"]}`, n("chat:completions", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: its wildcard":             {"narrow", `{"name":"a","scopes":["chat:*"]}`, n("chat:*", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: a narrower wildcard":      {"narrow", `{"name":"a","scopes":["chat:comp*"]}`, n("chat:comp*", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: api-keys, held":           {"narrow", `{"name":"a","scopes":["api-keys"]}`, n("api-keys", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: a wider wildcard":         {"narrow", `{"name":"a","scopes":["ch*"]}`, forbidden},
		"narrow: everything":               {"narrow", `{"name":"a","scopes":["*"]}`, forbidden},
		"narrow: admin":                    {"narrow", `{"name":"a","scopes":["admin"]}`, forbidden},
		"narrow: a scope it lacks":         {"narrow", `{"name":"a","scopes":["image:generate"]}`, forbidden},
		"narrow: one good, one bad":        {"narrow", `{"name":"a","scopes":["models:read","models:write"]}`, forbidden},
		"wide: everything":                 {"wide", `{"name":"a","scopes":["*"]}`, want{201, "*", "", never, "", "", "acct_w"}},
		"wide: admin under *":              {"wide", `{"name":"a","scopes":["admin"]}`, forbidden},
		"wide: read and write":             {"wide", `{"name":"a","scopes":["read","write"]}`, want{201, "read,write", "", never, "", "", "acct_w"}},
		"admin: admin":                     {"admin", `{"name":"a","owner":"acct_n","scopes":["admin"]}`, want{201, "admin", "", never, "", "", "acct_n"}},
		"narrow: another owner":            {"narrow", `{"name":"a","owner":"acct_w"}`, forbidden},
		"narrow: models inherited":         {"narrow", `{"name":"a"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: a listed model":           {"narrow", `{"name":"a","models":["gpt-4o-mini"]}`, n("", "gpt-4o-mini", &expiry)},
		"narrow: a model under a wildcard": {"narrow", `{"name":"a","models":["claude-3-opus"]}`, n("", "claude-3-opus", &expiry)},
		"narrow: a narrower model pattern": {"narrow", `{"name":"a","models":["claude-3*"]}`, n("", "claude-3*", &expiry)},
		"narrow: a wider model pattern":    {"narrow", `{"name":"a","models":["gpt-4o-mini*"]}`, forbidden},
		"narrow: a model off the list":     {"narrow", `{"name":"a","models":["gpt-4o"]}`, forbidden},
		"narrow: any model":                {"narrow", `{"name":"a","models":["*"]}`, forbidden},
		"narrow: a prefix of a model":      {"narrow", `{"name":"a","models":["claude"]}`, forbidden},
		"wide: any model list":             {"wide", `{"name":"a","models":["*"]}`, want{201, "", "*", never, "", "", "acct_w"}},
		// expiry
		"narrow: expiry inherited":           {"narrow", `{"name":"a"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: an earlier expiry":          {"narrow", `{"name":"a","expires_in":"7d"}`, n("", "gpt-4o-mini,claude-*", in(7*24*time.Hour))},
		"narrow: a later expiry":             {"narrow", `{"name":"a","expires_in":"31d"}`, forbidden},
		"narrow: a user key (never expires)": {"narrow", `{"name":"a","kind":"user"}`, forbidden},
		"wide: a user key":                   {"wide", `{"name":"a","kind":"user"}`, want{201, "", "", never, "", "", "acct_w"}},
		// certificate binding
		"narrow: binding inherited":       {"narrow", `{"name":"a"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: the same binding":        {"narrow", `{"name":"a","bind_cert":"` + webSPIFFE + `"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: another binding":         {"narrow", `{"name":"a","bind_cert":"spiffe://example.org/ns/prod/sa/other"}`, forbidden},
		"narrow: its certificate by hash": {"narrow", `{"name":"a","bind_cert":"sha256:` + sha256Hex(web.Cert.Raw) + `"}`, forbidden},
		"robot: bound to its certificate": {"robot", `{"name":"a","scopes":["chat:completions"]}`, want{201, "chat:completions", "", never, robotFP, "", robotFP}},
		"robot: the same in upper case":   {"robot", `{"name":"a","bind_cert":"` + strings.ToUpper(robotFP[:7]) + robotFP[7:] + `"}`, want{201, "", "", never, strings.ToUpper(robotFP[:7]) + robotFP[7:], "", robotFP}},
		"robot: another certificate":      {"robot", `{"name":"a","bind_cert":"` + webSPIFFE + `"}`, forbidden},
		"wide: any binding":               {"wide", `{"name":"a","bind_cert":"` + webSPIFFE + `"}`, want{201, "", "", never, webSPIFFE, "", "acct_w"}},
		// plan
		"narrow: plan inherited": {"narrow", `{"name":"a"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: its own plan":   {"narrow", `{"name":"a","plan":"pro"}`, n("", "gpt-4o-mini,claude-*", &expiry)},
		"narrow: another plan":   {"narrow", `{"name":"a","plan":"enterprise"}`, forbidden},
		"wide: a plan":           {"wide", `{"name":"a","plan":"pro"}`, forbidden},
		"admin: a plan":          {"admin", `{"name":"a","owner":"acct_w","plan":"enterprise"}`, want{201, "", "", never, "", "enterprise", "acct_w"}},
	} {
		t.Run(name, func(t *testing.T) {
			client, key, actor := fx.client, "", ""
			switch tc.caller {
			case "narrow":
				client, key, actor = webClient, narrow, narrowRec.ID
			case "wide":
				key, actor = wide, wideRec.ID
			case "admin":
				key, actor = fx.admin, fx.adminRec.ID
			case "robot":
				client, actor = robotClient, "cert:key-robot"
			}
			body := strings.Replace(tc.body, `"name":"a"`, `"name":"`+strings.NewReplacer(":", "-", "(", "", ")", "", "*", "star").Replace(name)+`"`, 1)
			status, _, m, raw := fx.callWith(t, client, key, "POST", "/api-keys", body, nil)
			if status != tc.want.status {
				t.Fatalf("%d %s, want %d", status, raw, tc.want.status)
			}
			if status != 201 {
				if !strings.Contains(raw, "FORBIDDEN") {
					t.Fatalf("no FORBIDDEN code: %s", raw)
				}
				return
			}
			fx.remember(m["key"])
			var v View
			if err := json.Unmarshal([]byte(raw), &v); err != nil {
				t.Fatal(err)
			}
			rec, err := fx.store.Get(ctx, v.ID)
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			switch {
			case strings.Join(rec.Scopes, ",") != w.scopes, strings.Join(rec.Models, ",") != w.models,
				rec.BoundCert != w.bound, rec.Plan != w.plan, rec.Owner != w.owner, rec.CreatedBy != actor, v.CreatedBy != actor:
				t.Fatalf("stored %+v\nwant %+v, created by %s", rec, w, actor)
			case w.expires == nil && !rec.ExpiresAt.IsZero(),
				w.expires != nil && (rec.ExpiresAt.After(expiry) || rec.ExpiresAt.Sub(*w.expires).Abs() > 2*time.Second):
				t.Fatalf("expires at %v, want %v", rec.ExpiresAt, w.expires)
			}
		})
	}
}

// TestRotationStaysWithinTheCaller rotates keys of the caller's owner that an admin
// made: only those whose successor would not exceed the caller are rotated.
func TestRotationStaysWithinTheCaller(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	expiry := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	caller, callerRec := fx.mk(t, authz.KeySpec{Name: "narrow", Owner: "acct_n",
		Scopes: []string{ScopeAPIKeys, "chat:*"}, Models: []string{"gpt-4o-mini"}, ExpiresAt: expiry, BoundCert: webSPIFFE, Plan: "pro"})
	client := fx.clientWith(fx.ca.Issue(t, certtest.LeafOptions{CommonName: "web", URIs: []string{webSPIFFE}}))
	within := authz.KeySpec{Owner: "acct_n", Scopes: []string{"chat:completions"}, Models: []string{"gpt-4o-mini"},
		ExpiresAt: time.Now().Add(7 * 24 * time.Hour), BoundCert: webSPIFFE, Plan: "pro"}
	for name, tc := range map[string]struct {
		change func(*authz.KeySpec)
		age    time.Duration // how long ago the key was made
		status int
	}{
		"within the caller":    {func(*authz.KeySpec) {}, 0, 201},
		"a scope it lacks":     {func(s *authz.KeySpec) { s.Scopes = []string{"admin"} }, 0, 403},
		"no model list":        {func(s *authz.KeySpec) { s.Models = nil }, 0, 403},
		"a model off its list": {func(s *authz.KeySpec) { s.Models = []string{"gpt-4o"} }, 0, 403},
		"never expires":        {func(s *authz.KeySpec) { s.ExpiresAt = time.Time{} }, 0, 403},
		// Made 10 days ago to expire just before the caller: its successor lives 40 days.
		"a lifetime past its own": {func(s *authz.KeySpec) { s.ExpiresAt = expiry.Add(-time.Minute) }, 10 * 24 * time.Hour, 403},
		"unbound":                 {func(s *authz.KeySpec) { s.BoundCert = "" }, 0, 403},
		"another plan":            {func(s *authz.KeySpec) { s.Plan = "enterprise" }, 0, 403},
	} {
		t.Run(name, func(t *testing.T) {
			spec := within
			spec.Name = strings.ReplaceAll(name, " ", "-")
			tc.change(&spec)
			key, rec, err := fx.format.Issue(spec, time.Now().Add(-tc.age))
			if err != nil {
				t.Fatal(err)
			}
			if err := fx.store.Create(ctx, rec); err != nil {
				t.Fatal(err)
			}
			fx.keys = append(fx.keys, key)
			status, _, m, raw := fx.callWith(t, client, caller, "POST", "/api-keys/"+rec.ID+"/rotate", "", nil)
			if status != tc.status {
				t.Fatalf("%d %s, want %d", status, raw, tc.status)
			}
			got, err := fx.store.Get(ctx, rec.ID)
			if err != nil {
				t.Fatal(err)
			}
			if status == 201 {
				fx.remember(m["key"])
				next, err := fx.store.Get(ctx, m["id"].(string))
				if err != nil || next.ExpiresAt.After(callerRec.ExpiresAt) || next.BoundCert != webSPIFFE {
					t.Fatalf("successor %+v %v", next, err)
				}
			} else if got.ReplacedBy != "" {
				t.Fatal("a refused rotation replaced the key")
			}
		})
	}
}

// TestMintedKeysOutliveTheirCaller: revocation is per key, and created_by finds them.
func TestMintedKeysOutliveTheirCaller(t *testing.T) {
	fx := newFixture(t)
	caller, callerRec := fx.mk(t, authz.KeySpec{Name: "minter", Owner: "acct_m", Scopes: []string{ScopeAPIKeys, "chat:*"}})
	status, _, m, raw := fx.call(t, caller, "POST", "/api-keys", `{"name":"child","scopes":["chat:completions"]}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, raw)
	}
	fx.remember(m["key"])
	child := m["key"].(string)
	if status, _, _, raw := fx.call(t, fx.admin, "DELETE", "/api-keys/"+callerRec.ID, ""); status != 200 {
		t.Fatalf("revoke the caller: %d %s", status, raw)
	}
	if d, err := fx.engine.Check(context.Background(), &authz.Request{APIKey: child, Method: "POST", Path: "/v1/chat/completions"}); err != nil || !d.Allowed() {
		t.Fatalf("the minted key died with its caller: %v %v", d.Reason, err)
	}
	status, _, _, raw = fx.call(t, fx.admin, "GET", "/api-keys", "")
	var list []View
	if err := json.Unmarshal([]byte(raw), &list); status != 200 || err != nil {
		t.Fatalf("list: %d %s", status, raw)
	}
	var minted []string
	for _, v := range list {
		if v.CreatedBy == callerRec.ID {
			minted = append(minted, v.Name)
		}
	}
	if strings.Join(minted, ",") != "child" {
		t.Fatalf("created_by %s finds %v", callerRec.ID, minted)
	}
	if status, _, _, _ := fx.call(t, caller, "POST", "/api-keys", `{"name":"after"}`); status != http.StatusUnauthorized {
		t.Fatalf("a revoked caller minted: %d", status)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

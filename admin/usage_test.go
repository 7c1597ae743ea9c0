package admin

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/usage"
)

func TestUsageRoutes(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	recs, err := fx.store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // name → id
	for _, r := range recs {
		ids[r.Name] = r.ID
	}
	st, err := usage.OpenSQLite(ctx, filepath.Join(t.TempDir(), "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	at := func(m int) int64 { return t0.Add(time.Duration(m) * time.Minute).Unix() }
	if err := st.Write(ctx, []usage.Batch{{ID: "r-1", Counts: map[usage.Cell]int64{
		{Minute: at(0), KeyID: ids["app"], Owner: "acct_a", Route: "chat", Model: "gpt-4o", Outcome: "allowed"}:          4,
		{Minute: at(0), KeyID: ids["app"], Owner: "acct_a", Route: "chat", Model: "o1", Outcome: "model_not_allowed"}:    1,
		{Minute: at(1), KeyID: ids["app"], Owner: "acct_a", Route: "images", Model: "", Outcome: "allowed"}:              2,
		{Minute: at(1), KeyID: ids["b app"], Owner: "acct_b", Route: "chat", Model: "gpt-4o", Outcome: "allowed"}:        9,
		{Minute: at(1), KeyID: "", Owner: "", Route: "chat", Model: "", Outcome: "unknown_key"}:                          3,
		{Minute: at(2), KeyID: ids["self-service"], Owner: "acct_a", Route: "admin", Model: "", Outcome: "rate_limited"}: 1,
	}}}); err != nil {
		t.Fatal(err)
	}
	f, _ := authz.NewFormat("mgx-sk-")
	srv := httptest.NewServer(New(Config{Engine: fx.engine, Store: fx.store, Format: f, Audit: audit.New(fx.audit),
		UsageStats: st, Now: func() time.Time { return t0.Add(time.Hour) }}))
	defer srv.Close()
	fx.url = srv.URL

	rng := "from=2026-11-24T10:00:00Z&to=2026-11-24T10:05:00Z"
	// Points are ordered by time, then by value (bytewise).
	pt := func(id string, n int) string {
		return `{"time":"2026-11-24T10:00:00Z","key_id":"` + id + `","count":` + strconv.Itoa(n) + `}`
	}
	byKey := "[" + pt(ids["app"], 7) + "," + pt(ids["self-service"], 1) + "]"
	if ids["self-service"] < ids["app"] {
		byKey = "[" + pt(ids["self-service"], 1) + "," + pt(ids["app"], 7) + "]"
	}
	for name, tc := range map[string]struct {
		key, path string
		status    int
		want      string // the points, compacted; or the error code
	}{
		"admin, a key by route": {fx.admin, "/api-keys/" + ids["app"] + "/usage?step=minute&by=route&" + rng, 200,
			`[{"time":"2026-11-24T10:00:00Z","route":"chat","count":5},{"time":"2026-11-24T10:01:00Z","route":"images","count":2}]`},
		"owner, its key by model": {fx.owner, "/api-keys/" + ids["app"] + "/usage?step=minute&by=model&" + rng, 200,
			`[{"time":"2026-11-24T10:00:00Z","model":"gpt-4o","count":4},{"time":"2026-11-24T10:00:00Z","model":"o1","count":1},{"time":"2026-11-24T10:01:00Z","model":"","count":2}]`},
		"owner, its key by outcome, default range and step": {fx.owner, "/api-keys/" + ids["app"] + "/usage?by=outcome", 200,
			`[{"time":"2026-11-24T10:00:00Z","outcome":"allowed","count":6},{"time":"2026-11-24T10:00:00Z","outcome":"model_not_allowed","count":1}]`},
		"owner, its own usage by key": {fx.owner, "/usage?by=key&" + rng, 200, byKey},
		"admin, every owner by outcome": {fx.admin, "/usage?step=day&by=outcome&" + rng, 200,
			`[{"time":"2026-11-24T00:00:00Z","outcome":"allowed","count":15},{"time":"2026-11-24T00:00:00Z","outcome":"model_not_allowed","count":1},{"time":"2026-11-24T00:00:00Z","outcome":"rate_limited","count":1},{"time":"2026-11-24T00:00:00Z","outcome":"unknown_key","count":3}]`},
		"admin, another owner": {fx.admin, "/usage?owner=acct_b&" + rng, 200, `[{"time":"2026-11-24T10:00:00Z","count":9}]`},
		"an empty range":       {fx.admin, "/usage?from=2026-11-20T10:00:00Z&to=2026-11-20T11:00:00Z", 200, `[]`},

		"owner, another owner's key":   {fx.owner, "/api-keys/" + fx.otherRec.ID + "/usage", 404, "KEY_NOT_FOUND"},
		"owner, another owner's usage": {fx.owner, "/usage?owner=acct_b", 403, "FORBIDDEN"},
		"a key without api-keys":       {fx.plain, "/usage", 403, ""},
		"no key":                       {"", "/usage", 401, ""},
		"an unknown key id":            {fx.admin, "/api-keys/key_0000000000000000/usage", 404, "KEY_NOT_FOUND"},
		"a bad step":                   {fx.admin, "/usage?step=week", 400, "INVALID_REQUEST"},
		"a bad dimension":              {fx.admin, "/usage?by=hash", 400, "INVALID_REQUEST"},
		"by key on a key":              {fx.admin, "/api-keys/" + ids["app"] + "/usage?by=key", 400, "INVALID_REQUEST"},
		"a time that is not RFC 3339":  {fx.admin, "/usage?from=yesterday", 400, "INVALID_REQUEST"},
		"a time without a zone":        {fx.admin, "/usage?from=2026-11-24T10:00:00", 400, "INVALID_REQUEST"},
		"from after to":                {fx.admin, "/usage?from=2026-11-25T10:00:00Z&to=2026-11-24T10:00:00Z", 400, "INVALID_REQUEST"},
		"too many minutes":             {fx.admin, "/usage?step=minute&from=2026-11-20T10:00:00Z", 400, "INVALID_REQUEST"},
		"too many hours":               {fx.admin, "/usage?from=2016-11-20T10:00:00Z", 400, "INVALID_REQUEST"},
		"a year of days":               {fx.admin, "/usage?step=day&from=2025-12-01T00:00:00Z", 200, `[{"time":"2026-11-24T00:00:00Z","count":20}]`},
		"a parameter twice":            {fx.admin, "/usage?by=route&by=model", 400, "INVALID_REQUEST"},
		"an unknown parameter":         {fx.admin, "/usage?key=x", 400, "INVALID_REQUEST"},
		"owner on a key":               {fx.admin, "/api-keys/" + ids["app"] + "/usage?owner=acct_b", 400, "INVALID_REQUEST"},
		"a query that does not parse":  {fx.admin, "/usage?from=%zz", 400, "INVALID_REQUEST"},
	} {
		t.Run(name, func(t *testing.T) {
			status, hdr, m, raw := fx.call(t, tc.key, "GET", tc.path, "")
			if status != tc.status {
				t.Fatalf("%d %s, want %d", status, raw, tc.status)
			}
			for _, k := range fx.keys {
				if strings.Contains(raw, k) {
					t.Fatal("a key in the answer")
				}
			}
			if status != 200 {
				if tc.want != "" && m["error"].(map[string]any)["code"] != tc.want {
					t.Fatalf("%s, want code %s", raw, tc.want)
				}
				return
			}
			if hdr.Get("Cache-Control") != "no-store" {
				t.Error("no Cache-Control: no-store")
			}
			var resp UsageResponse
			if err := json.Unmarshal([]byte(raw), &resp); err != nil {
				t.Fatal(err)
			}
			var body struct{ Points json.RawMessage }
			if err := json.Unmarshal([]byte(raw), &body); err != nil {
				t.Fatal(err)
			}
			if pts := string(body.Points); pts != tc.want {
				t.Fatalf("points\n got %s\nwant %s", pts, tc.want)
			}
			var total int64
			for _, p := range resp.Points {
				total += p.Count
			}
			if total != resp.Total {
				t.Errorf("total %d, points sum to %d", resp.Total, total)
			}
		})
	}
	fx.checkAudit(t, audit.AdminCall)
}

func TestUsageOff(t *testing.T) {
	fx := newFixture(t)
	for _, path := range []string{"/usage", "/api-keys/" + fx.otherRec.ID + "/usage"} {
		if status, _, m, raw := fx.call(t, fx.admin, "GET", path, ""); status != 501 || m["error"].(map[string]any)["code"] != "USAGE_DISABLED" {
			t.Errorf("%s: %d %s", path, status, raw)
		}
	}
}

package authz

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/golden"
)

var update = flag.Bool("update", false, "rewrite the golden deny bodies under testdata/deny")

// memLookup is an in-memory KeyLookup that counts its calls.
type memLookup struct {
	records map[KeyHash]Record
	calls   atomic.Int64
	err     error
}

func (m *memLookup) Lookup(_ context.Context, h KeyHash) (Record, error) {
	m.calls.Add(1)
	if m.err != nil {
		return Record{}, m.err
	}
	r, ok := m.records[h]
	if !ok {
		return Record{}, ErrKeyNotFound
	}
	return r, nil
}

// Golden fixtures: the key id and expiry the golden bodies name.
const (
	goldenKeyID     = "key_GoldenFixture000"
	goldenExpiredAt = "2024-01-01T00:00:00Z"
)

var testNow = time.Date(2025, 7, 14, 12, 0, 0, 0, time.UTC)

type fixture struct {
	engine                *Engine
	lookup                *memLookup
	active, revoked, gone string // keys
	unknown, badChecksum  string
	boundFP, boundSPIFFE  string // keys bound to a client certificate (mtlsFixture)
}

func newFixture(t testing.TB, p Profile) *fixture {
	t.Helper()
	f := mustFormat(t, "mgx-sk-")
	fx := &fixture{lookup: &memLookup{records: map[KeyHash]Record{}}}
	add := func(id string, mod func(*Record)) string {
		key, err := f.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		r := Record{ID: id, Name: "Production App", Owner: "acct_1", Scopes: []string{"chat:completions", "models:read"},
			Hash: HashKey(key), Hint: f.Hint(key), CreatedAt: testNow.Add(-24 * time.Hour)}
		if mod != nil {
			mod(&r)
		}
		fx.lookup.records[r.Hash] = r
		return key
	}
	expiry, _ := time.Parse(time.RFC3339, goldenExpiredAt)
	fx.active = add("key_Active0000000000", nil)
	fx.revoked = add(goldenKeyID, func(r *Record) { r.RevokedAt = testNow.Add(-time.Hour) })
	fx.gone = add("key_Expired000000000", func(r *Record) { r.ExpiresAt = expiry })
	var err error
	if fx.unknown, err = f.Generate(nil); err != nil {
		t.Fatal(err)
	}
	fx.badChecksum = fx.active[:len(fx.active)-1] + flip(fx.active[len(fx.active)-1])
	fx.engine, err = New(Config{Format: f, Lookup: fx.lookup, Profile: p, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func TestCheckReasons(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	for name, tc := range map[string]struct {
		req     Request
		want    Reason
		lookups int64
	}{
		"bearer":                    {Request{Authorization: "Bearer " + fx.active}, ReasonAllowed, 1},
		"bearer lower-case scheme":  {Request{Authorization: "bearer " + fx.active}, ReasonAllowed, 1},
		"bearer upper-case scheme":  {Request{Authorization: "BEARER " + fx.active}, ReasonAllowed, 1},
		"bearer extra spaces":       {Request{Authorization: "  Bearer \t " + fx.active + " "}, ReasonAllowed, 1},
		"x-api-key":                 {Request{APIKey: fx.active}, ReasonAllowed, 1},
		"same key in both headers":  {Request{Authorization: "Bearer " + fx.active, APIKey: fx.active}, ReasonAllowed, 1},
		"nothing":                   {Request{}, ReasonMissing, 0},
		"empty authorization":       {Request{Authorization: "   "}, ReasonMissing, 0},
		"scheme only":               {Request{Authorization: "Bearer"}, ReasonMalformed, 0},
		"scheme and spaces":         {Request{Authorization: "Bearer   "}, ReasonMalformed, 0},
		"basic scheme":              {Request{Authorization: "Basic " + fx.active}, ReasonMalformed, 0},
		"no scheme":                 {Request{Authorization: fx.active}, ReasonMalformed, 0},
		"two different keys":        {Request{Authorization: "Bearer " + fx.active, APIKey: fx.unknown}, ReasonMalformed, 0},
		"two authorization headers": {Request{Authorization: "Bearer " + fx.active + ",Bearer " + fx.active}, ReasonMalformed, 0},
		"whitespace inside":         {Request{Authorization: "Bearer " + fx.active[:15] + " " + fx.active[15:]}, ReasonMalformed, 0},
		"wrong prefix":              {Request{Authorization: "Bearer mx4-sk-" + fx.active[7:]}, ReasonMalformed, 0},
		"api key with scheme":       {Request{APIKey: "Bearer " + fx.active}, ReasonMalformed, 0},
		"bad checksum":              {Request{Authorization: "Bearer " + fx.badChecksum}, ReasonBadChecksum, 0},
		"unknown":                   {Request{APIKey: fx.unknown}, ReasonUnknownKey, 1},
		"revoked":                   {Request{APIKey: fx.revoked}, ReasonRevoked, 1},
		"expired":                   {Request{APIKey: fx.gone}, ReasonExpired, 1},
	} {
		t.Run(name, func(t *testing.T) {
			before := fx.lookup.calls.Load()
			d, err := fx.engine.Check(context.Background(), &tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if d.Reason != tc.want {
				t.Fatalf("reason = %v, want %v", d.Reason, tc.want)
			}
			if got := fx.lookup.calls.Load() - before; got != tc.lookups {
				t.Fatalf("store lookups = %d, want %d", got, tc.lookups)
			}
			if d.Allowed() {
				if d.Record.ID != "key_Active0000000000" || d.Denial.Status != 0 || d.Denial.Body != "" {
					t.Fatalf("allowed decision: record %q, denial %+v", d.Record.ID, d.Denial)
				}
			} else if d.Denial.Status != 401 || d.Denial.RetryAfter != "" || len(d.Denial.Body) == 0 || !strings.HasPrefix(d.Denial.WWWAuthenticate, `Bearer realm="keygate"`) {
				t.Fatalf("denial = %+v", d.Denial)
			}
			if !strings.HasPrefix(d.RequestID, "req_") || len(d.RequestID) != 36 {
				t.Fatalf("request id %q", d.RequestID)
			}
		})
	}
}

func TestCheckKeepsRequestID(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	d, _ := fx.engine.Check(context.Background(), &Request{RequestID: "abc-123"})
	if d.RequestID != "abc-123" {
		t.Fatalf("request id %q", d.RequestID)
	}
	d2, _ := fx.engine.Check(context.Background(), &Request{})
	d3, _ := fx.engine.Check(context.Background(), &Request{})
	if d2.RequestID == d3.RequestID {
		t.Fatal("generated request ids repeat")
	}
}

func TestCheckStoreFailures(t *testing.T) {
	for name, tc := range map[string]struct {
		err    error
		reason Reason // ReasonUndecided: Check returns an error
	}{
		"unavailable":  {fmt.Errorf("vault: %w: dial tcp 127.0.0.1:8200: connection refused", ErrStoreUnavailable), ReasonUnavailable},
		"throttled":    {ErrLookupThrottled, ReasonThrottled},
		"unclassified": {errors.New("decode record: unexpected end of JSON input"), ReasonUndecided},
	} {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t, ProfileMagicx)
			fx.lookup.err = tc.err
			d, err := fx.engine.Check(context.Background(), &Request{APIKey: fx.active})
			if d.Allowed() {
				t.Fatal("allowed while the store fails")
			}
			if tc.reason == ReasonUndecided {
				if err == nil || d.Reason != ReasonUndecided {
					t.Fatalf("got %v, %v; want an error", d.Reason, err)
				}
				if strings.Contains(err.Error(), fx.active[7:]) {
					t.Fatal("error carries key material")
				}
				return
			}
			if err != nil || d.Reason != tc.reason {
				t.Fatalf("got %v, %v; want %v", d.Reason, err, tc.reason)
			}
			if d.Denial.Status != 503 || d.Denial.RetryAfter != "1" || d.Denial.WWWAuthenticate != "" {
				t.Fatalf("denial %+v", d.Denial)
			}
			// Format errors are still settled without the store.
			d, err = fx.engine.Check(context.Background(), &Request{APIKey: fx.badChecksum})
			if err != nil || d.Reason != ReasonBadChecksum {
				t.Fatalf("bad checksum with the store failing: %v, %v", d.Reason, err)
			}
		})
	}
}

func TestCheckRejectsMismatchedRecord(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	// A store bug that answers with another key's record must not allow.
	h := HashKey(fx.unknown)
	r := fx.lookup.records[HashKey(fx.active)]
	fx.lookup.records[h] = r
	d, err := fx.engine.Check(context.Background(), &Request{APIKey: fx.unknown})
	if err != nil || d.Reason != ReasonUnknownKey {
		t.Fatalf("mismatched record: %v, %v", d.Reason, err)
	}
}

func TestExpiryBoundary(t *testing.T) {
	fx := newFixture(t, ProfileMagicx)
	rec := fx.lookup.records[HashKey(fx.active)]
	rec.ExpiresAt = testNow
	fx.lookup.records[rec.Hash] = rec
	if d, _ := fx.engine.Check(context.Background(), &Request{APIKey: fx.active}); d.Reason != ReasonExpired {
		t.Fatalf("at expires_at: %v, want expired", d.Reason)
	}
	rec.ExpiresAt = testNow.Add(time.Second)
	fx.lookup.records[rec.Hash] = rec
	if d, _ := fx.engine.Check(context.Background(), &Request{APIKey: fx.active}); d.Reason != ReasonAllowed {
		t.Fatalf("a second before expires_at: %v, want allowed", d.Reason)
	}
}

// TestDenyBodiesGolden pins every deny body of every profile to testdata/deny. Run with
// -update to rewrite them after a deliberate change; the diff is the review.
func TestDenyBodiesGolden(t *testing.T) {
	for p := Profile(0); p < numProfiles; p++ {
		fx := newFixture(t, p)
		reqs := map[Reason]Request{
			ReasonUnavailable: {APIKey: fx.active, RequestID: "unavailable"},
			ReasonThrottled:   {APIKey: fx.active, RequestID: "throttled"},
			ReasonMissing:     {},
			ReasonMalformed:   {Authorization: "Basic abc"},
			ReasonBadChecksum: {APIKey: fx.badChecksum},
			ReasonUnknownKey:  {APIKey: fx.unknown},
			ReasonRevoked:     {APIKey: fx.revoked},
			ReasonExpired:     {APIKey: fx.gone},
		}
		for r, req := range reqs {
			t.Run(fmt.Sprintf("%v/%v", p, r), func(t *testing.T) {
				fx.lookup.err = map[string]error{"unavailable": ErrStoreUnavailable, "throttled": ErrLookupThrottled}[req.RequestID]
				d, err := fx.engine.Check(context.Background(), &req)
				if err != nil || d.Reason != r {
					t.Fatalf("got %v, %v; want %v", d.Reason, err, r)
				}
				checkGolden(t, GoldenPath(p, r), d.Denial.Body)
			})
		}
	}
}

// TestForbidGolden pins the 403 bodies: a valid key without the scope an operation needs.
func TestForbidGolden(t *testing.T) {
	for p := Profile(0); p < numProfiles; p++ {
		t.Run(p.String(), func(t *testing.T) {
			fx := newFixture(t, p)
			d, err := fx.engine.Check(context.Background(), &Request{APIKey: fx.active})
			if err != nil || !d.Allowed() {
				t.Fatalf("%v %v", d.Reason, err)
			}
			d = fx.engine.Forbid(d, "image:generate")
			if d.Allowed() || d.Denial.Status != 403 || d.Denial.WWWAuthenticate != "" || d.Denial.RetryAfter != "" {
				t.Fatalf("forbidden decision %+v", d)
			}
			checkGolden(t, GoldenPath(p, ReasonInsufficientScope), d.Denial.Body)
		})
	}
}

// checkGolden compares body with the golden file at path (rewriting it with -update).
func checkGolden(t *testing.T, path, body string) {
	t.Helper()
	golden.Check(t, path, body, *update)
}

// GoldenPath is where the golden deny body for profile p and reason r lives.
func GoldenPath(p Profile, r Reason) string {
	return filepath.Join("..", "testdata", "deny", p.String(), r.String()+".json")
}

func TestParseProfile(t *testing.T) {
	for _, name := range Profiles() {
		p, err := ParseProfile(name)
		if err != nil || p.String() != name {
			t.Fatalf("ParseProfile(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := ParseProfile("MAGICX"); !errors.Is(err, ErrInvalidProfile) {
		t.Fatalf("ParseProfile(MAGICX) err = %v", err)
	}
}

func TestNewRequires(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	if _, err := New(Config{Lookup: &memLookup{}}); err == nil {
		t.Fatal("New without a format succeeded")
	}
	if _, err := New(Config{Format: f}); err == nil {
		t.Fatal("New without a lookup succeeded")
	}
	if _, err := New(Config{Format: f, Lookup: &memLookup{}, Profile: numProfiles}); !errors.Is(err, ErrInvalidProfile) {
		t.Fatalf("New with a bad profile: %v", err)
	}
}

func BenchmarkCheckValidKey(b *testing.B) {
	fx := newFixture(b, ProfileMagicx)
	req := Request{Authorization: "Bearer " + fx.active, RequestID: "5f0c6a8e-1b7d-4c55-9a0e-2b1f3c4d5e6f"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := fx.engine.Check(ctx, &req)
		if err != nil || !d.Allowed() {
			b.Fatal(d.Reason, err)
		}
	}
}

func BenchmarkCheckBadChecksum(b *testing.B) {
	fx := newFixture(b, ProfileMagicx)
	req := Request{Authorization: "Bearer " + fx.badChecksum, RequestID: "5f0c6a8e-1b7d-4c55-9a0e-2b1f3c4d5e6f"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, _ := fx.engine.Check(ctx, &req); d.Reason != ReasonBadChecksum {
			b.Fatal(d.Reason)
		}
	}
}

func FuzzCredentials(f *testing.F) {
	fx := newFixture(f, ProfileMagicx)
	for _, s := range [][2]string{
		{"Bearer " + fx.active, ""}, {"", fx.active}, {"bearer\t" + fx.badChecksum, ""}, {"Basic abc", ""},
		{"Bearer " + fx.active + ",Bearer " + fx.active, fx.active}, {"Bearer", " "}, {"\x00", "\xff"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, auth, apiKey string) {
		key, reason := fx.engine.credential(&Request{Authorization: auth, APIKey: apiKey})
		switch reason {
		case ReasonAllowed:
			// Whatever passes is one well-formed key, taken from a header as it was sent.
			if !fx.engine.format.Valid(key) {
				t.Fatalf("accepted an invalid key %q", key)
			}
			if !strings.Contains(auth, key) && !strings.Contains(apiKey, key) {
				t.Fatalf("key %q not in the headers", key)
			}
		case ReasonMissing, ReasonMalformed, ReasonBadChecksum:
			if key != "" {
				t.Fatalf("reason %v with key %q", reason, key)
			}
		default:
			t.Fatalf("credential returned %v", reason)
		}
	})
}

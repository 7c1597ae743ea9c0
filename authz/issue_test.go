package authz

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestIssue(t *testing.T) {
	f := mustFormat(t, "mutx_live_")
	now := time.Date(2025, 7, 14, 12, 0, 0, 500, time.UTC)
	key, rec, err := f.Issue(KeySpec{Name: "GitHub Actions", Owner: "user_1", Scopes: []string{"write", "read", "write"}, ExpiresAt: now.Add(90 * 24 * time.Hour)}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Valid(key) || rec.Hash != HashKey(key) || rec.Hint != f.Hint(key) || !ValidKeyID(rec.ID) {
		t.Fatalf("issued %q with record %+v", key, rec)
	}
	if strings.Join(rec.Scopes, ",") != "read,write" {
		t.Fatalf("scopes %v, want sorted and deduplicated", rec.Scopes)
	}
	if !rec.CreatedAt.Equal(now.Truncate(time.Second)) || !rec.ExpiresAt.Equal(now.Add(90*24*time.Hour).Truncate(time.Second)) {
		t.Fatalf("times %v %v", rec.CreatedAt, rec.ExpiresAt)
	}
	if rec.StatusAt(now) != StatusActive {
		t.Fatalf("status %v", rec.StatusAt(now))
	}
	key2, rec2, err := f.Issue(KeySpec{Name: "GitHub Actions"}, now)
	if err != nil || key2 == key || rec2.ID == rec.ID || !rec2.ExpiresAt.IsZero() {
		t.Fatalf("second issue: %q %+v %v", key2, rec2, err)
	}
}

func TestIssueRejects(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	now := time.Now()
	for name, spec := range map[string]KeySpec{
		"empty name":         {},
		"long name":          {Name: strings.Repeat("n", 65)},
		"name with newline":  {Name: "a\nb"},
		"name padded":        {Name: " App"},
		"non-ascii name":     {Name: "Prod – App"},
		"owner with space":   {Name: "a", Owner: "acct 1"},
		"long owner":         {Name: "a", Owner: strings.Repeat("o", 129)},
		"scope with comma":   {Name: "a", Scopes: []string{"a,b"}},
		"scope with space":   {Name: "a", Scopes: []string{"chat completions"}},
		"empty scope":        {Name: "a", Scopes: []string{""}},
		"expiry in the past": {Name: "a", ExpiresAt: now.Add(-time.Second)},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := f.Issue(spec, now); !errors.Is(err, ErrInvalidKeySpec) {
				t.Fatalf("Issue(%+v) = %v, want ErrInvalidKeySpec", spec, err)
			}
		})
	}
}

func TestValidKeyID(t *testing.T) {
	id, err := NewKeyID(nil)
	if err != nil || !ValidKeyID(id) {
		t.Fatalf("NewKeyID = %q, %v", id, err)
	}
	for _, bad := range []string{"", "key_", "key_123", "KEY_0000000000000000", "key_000000000000000/", "key_00000000000000000", "../key_000000000000"} {
		if ValidKeyID(bad) {
			t.Errorf("ValidKeyID(%q) = true", bad)
		}
	}
}

func TestStatusAt(t *testing.T) {
	now := time.Now()
	for name, tc := range map[string]struct {
		rec  Record
		want Status
	}{
		"active":              {Record{}, StatusActive},
		"expires later":       {Record{ExpiresAt: now.Add(time.Minute)}, StatusActive},
		"expired":             {Record{ExpiresAt: now.Add(-time.Minute)}, StatusExpired},
		"revoked":             {Record{RevokedAt: now.Add(-time.Minute)}, StatusRevoked},
		"revoked and expired": {Record{RevokedAt: now.Add(-time.Minute), ExpiresAt: now.Add(-time.Hour)}, StatusRevoked},
	} {
		if got := tc.rec.StatusAt(now); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

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
	if rec.StatusAt(now) != StatusActive || rec.Kind != KindProduct {
		t.Fatalf("status %v", rec.StatusAt(now))
	}
	key2, rec2, err := f.Issue(KeySpec{Name: "GitHub Actions", Owner: "user_1"}, now)
	if err != nil || key2 == key || rec2.ID == rec.ID || !rec2.ExpiresAt.IsZero() {
		t.Fatalf("second issue: %q %+v %v", key2, rec2, err)
	}
}

func TestIssueRejects(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	now := time.Now()
	pasted, _ := f.Generate(nil)
	body := pasted[len("mgx-sk-"):]
	for name, spec := range map[string]KeySpec{
		"a key as name":       {Name: "my key " + pasted, Owner: "o"},
		"a key as owner":      {Name: "a", Owner: pasted},
		"a key body as owner": {Name: "a", Owner: "acct/" + body},
		"a key as scope":      {Name: "a", Owner: "o", Scopes: []string{"read", pasted}},
		"a key as model":      {Name: "a", Owner: "o", Models: []string{"gpt-4o", "MGX-SK-" + body}},
		"a key as binding":    {Name: "a", Owner: "o", BoundCert: "spiffe://example.org/" + pasted},
		"empty name":          {Owner: "o"},
		"no owner":            {Name: "a"},
		"expiring user key":   {Name: "a", Owner: "o", Kind: KindUser, ExpiresAt: now.Add(time.Hour)},
		"unknown kind":        {Name: "a", Owner: "o", Kind: "service"},
		"long name":           {Name: strings.Repeat("n", 65), Owner: "o"},
		"name with newline":   {Name: "a\nb", Owner: "o"},
		"name padded":         {Name: " App", Owner: "o"},
		"non-ascii name":      {Name: "Prod – App", Owner: "o"},
		"owner with space":    {Name: "a", Owner: "acct 1"},
		"long owner":          {Name: "a", Owner: strings.Repeat("o", 129)},
		"scope with comma":    {Name: "a", Owner: "o", Scopes: []string{"a,b"}},
		"scope with space":    {Name: "a", Owner: "o", Scopes: []string{"chat completions"}},
		"empty scope":         {Name: "a", Owner: "o", Scopes: []string{""}},
		"expiry in the past":  {Name: "a", Owner: "o", ExpiresAt: now.Add(-time.Second)},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := f.Issue(spec, now)
			if !errors.Is(err, ErrInvalidKeySpec) {
				t.Fatalf("Issue(%+v) = %v, want ErrInvalidKeySpec", spec, err)
			}
			if strings.Contains(err.Error(), body[:RandomLen]) {
				t.Fatalf("the error quotes the key: %v", err)
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
		"rotating":            {Record{ReplacedBy: "key_x", ExpiresAt: now.Add(time.Hour)}, StatusRotating},
		"rotated, grace over": {Record{ReplacedBy: "key_x", ExpiresAt: now.Add(-time.Second)}, StatusExpired},
	} {
		if got := tc.rec.StatusAt(now); got != tc.want {
			t.Errorf("%s: %v, want %v", name, got, tc.want)
		}
	}
}

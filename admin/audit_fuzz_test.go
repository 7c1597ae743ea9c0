package admin

import (
	"slices"
	"testing"

	"github.com/keygate/keygate/authz/audit"
)

// FuzzAuditQuery feeds query strings to the audit route's parser: it never panics, and
// what it accepts is bounded: known kinds, a limit from 1 to MaxAuditLimit, short
// values, from before to.
func FuzzAuditQuery(f *testing.F) {
	for _, s := range []string{"", "event=auth.failed,auth.spray_suspected&event=admin.call&limit=1000",
		"key_id=key_AAAAAAAAAAAAAAAA&owner=acct_a&reason=revoked_key", "from=2026-11-24T10:00:00Z&to=2026-11-24T11:00:00Z",
		"limit=0", "limit=1001", "event=", "event=%zz", "from=2026-11-24T10:00:00%2B14:00", "owner=%00", "limit=1;x=2",
		"limit=1&limit=1", "event=key.revoked,,"} {
		f.Add(s)
	}
	kinds := audit.Kinds()
	f.Fuzz(func(t *testing.T, raw string) {
		q, bad := auditQuery(raw)
		if bad != nil {
			if bad.status != 400 {
				t.Fatalf("status %d", bad.status)
			}
			return
		}
		if q.Limit < 1 || q.Limit > MaxAuditLimit || q.OwnedOnly {
			t.Fatalf("accepted %+v", q)
		}
		for _, k := range q.Events {
			if !slices.Contains(kinds, k) {
				t.Fatalf("accepted kind %q", k)
			}
		}
		for _, v := range []string{q.KeyID, q.Owner, q.Reason} {
			if len(v) > maxAuditValue {
				t.Fatalf("accepted a %d-byte value", len(v))
			}
		}
		if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
			t.Fatalf("accepted from %v to %v", q.From, q.To)
		}
	})
}

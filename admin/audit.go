package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keygate/keygate/authz/audit"
)

// The audit route:
//
//	GET /audit  recent audit events: ?event=&key_id=&owner=&reason=&from=&to=&limit=
//
// It answers from the events this replica keeps in memory (audit_recent, seeded from
// the audit file at start), newest first. An api-keys caller sees only the events whose
// owner is its own: never an event without an owner (unknown keys, sprays), and no
// filter widens that. An admin caller sees all.

// Bounds of the audit route's query.
const (
	DefaultAuditLimit = 100
	MaxAuditLimit     = 1000
	maxAuditQuery     = 4096 // bytes of the whole query string
	maxAuditValue     = 256  // bytes of one parameter's value
)

// AuditResponse is the body of GET /audit.
type AuditResponse struct {
	Events    []audit.Event `json:"events"`    // newest first
	Truncated bool          `json:"truncated"` // more events matched than the limit
}

func (a *api) recentAudit(r *http.Request, c caller) reply {
	if !a.Audit.Keeps() {
		return fail(http.StatusNotImplemented, "AUDIT_DISABLED",
			"no recent audit events are kept (set audit_log, and audit_recent above 0)")
	}
	q, out := auditQuery(r.URL.RawQuery)
	if out != nil {
		return *out
	}
	if !c.admin {
		if q.Owner != "" && q.Owner != c.rec.Owner {
			return fail(http.StatusForbidden, "FORBIDDEN", "an api-keys caller sees its own owner's events only")
		}
		if c.rec.Owner == "" { // an owner of "" would select nothing narrower than everyone's
			return reply{http.StatusOK, AuditResponse{Events: []audit.Event{}}}
		}
		q.Owner, q.OwnedOnly = c.rec.Owner, true
	}
	events, truncated, _ := a.Audit.Recent(q)
	return reply{http.StatusOK, AuditResponse{Events: events, Truncated: truncated}}
}

// auditQuery parses the audit route's query string: event may repeat or hold a
// comma-separated list of kinds; every other parameter is given at most once; nothing
// else is accepted.
func auditQuery(raw string) (audit.Query, *reply) {
	bad := func(format string, args ...any) (audit.Query, *reply) {
		out := failBadRequest(fmt.Sprintf(format, args...))
		return audit.Query{}, &out
	}
	if len(raw) > maxAuditQuery {
		return bad("the query string is longer than %d bytes", maxAuditQuery)
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return bad("the query string does not parse")
	}
	q := audit.Query{Limit: DefaultAuditLimit}
	kinds := audit.Kinds()
	for k, vs := range vals {
		switch k {
		case "event":
		case "key_id", "owner", "reason", "from", "to", "limit":
			if len(vs) > 1 {
				return bad("parameter %q is given more than once", k)
			}
		default:
			return bad("unknown parameter %q: want event, key_id, owner, reason, from, to or limit", k)
		}
		for _, v := range vs {
			if len(v) > maxAuditValue {
				return bad("%s: longer than %d bytes", k, maxAuditValue)
			}
		}
	}
	for _, v := range vals["event"] {
		for _, kind := range strings.Split(v, ",") {
			if !slices.Contains(kinds, kind) {
				return bad("event: unknown kind %q: want %s", kind, strings.Join(kinds, ", "))
			}
			if !slices.Contains(q.Events, kind) {
				q.Events = append(q.Events, kind)
			}
		}
	}
	q.KeyID, q.Owner, q.Reason = vals.Get("key_id"), vals.Get("owner"), vals.Get("reason")
	for _, t := range []struct {
		name string
		to   *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		s := vals.Get(t.name)
		if s == "" {
			continue
		}
		if *t.to, err = time.Parse(time.RFC3339, s); err != nil {
			return bad("%s: want an RFC 3339 time such as 2026-11-24T10:00:00Z", t.name)
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.From.Before(q.To) {
		return bad("from must be before to")
	}
	if s := vals.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAuditLimit {
			return bad("limit: want a whole number from 1 to %d", MaxAuditLimit)
		}
		q.Limit = n
	}
	return q, nil
}

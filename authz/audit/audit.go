// Package audit writes keygate's audit log: one JSON object per line for every key
// lifecycle event, admin API call and failed authentication.
//
// An event names a key by its id or hint, never by the key itself; and since ids, paths
// and details can come from clients, the Log passes every string it writes (field
// values, detail keys and values, at any depth) through a redactor that replaces
// anything key-shaped by its hint. With WithRecent a Log also keeps its last events in
// memory, redacted as the lines are, for the admin API's GET /audit (recent.go). A Log
// is safe for concurrent use; a nil *Log discards events, so callers need no checks.
package audit

import (
	"bytes"
	"encoding/json"
	"io"
	"reflect"
	"sync"
	"time"

	"github.com/keygate/keygate/authz"
)

// Event kinds.
const (
	KeyCreated       = "key.created"
	KeyRotated       = "key.rotated"
	KeyRevoked       = "key.revoked"
	KeyScopesChanged = "key.scopes_changed"
	KeyExpiredOnUse  = "key.expired_on_use"   // an expired key was presented
	KeyDelivered     = "key.delivered"        // a key was written to an application's Vault path
	AuthFailed       = "auth.failed"          // a request was denied (reason says why)
	AdminCall        = "admin.call"           // an admin API request, allowed or not
	SpraySuspected   = "auth.spray_suspected" // a client presented many unknown keys; its uncached keys are refused for a while
)

// Event is one audit line. Empty fields are left out.
type Event struct {
	Time      time.Time      `json:"time"`
	Event     string         `json:"event"`
	KeyID     string         `json:"key_id,omitempty"`
	KeyHint   string         `json:"key_hint,omitempty"`
	Owner     string         `json:"owner,omitempty"`
	Actor     string         `json:"actor,omitempty"`  // who acted: "cli", "rotate-due", or the admin caller's key id
	Reason    string         `json:"reason,omitempty"` // a denial's reason code
	Status    int            `json:"status,omitempty"` // HTTP status of a denial or admin call
	Source    string         `json:"source,omitempty"` // the client's address
	RequestID string         `json:"request_id,omitempty"`
	Details   map[string]any `json:"details,omitempty"`
}

// Log writes events to a writer.
type Log struct {
	mu     sync.Mutex
	w      io.Writer
	now    func() time.Time
	redact func(string) string
	recent *ring // the last events written; nil: none kept (recent.go)
}

// Option configures a Log.
type Option func(*Log)

// WithFormat redacts with the deployment's key format: f.Redact, which also catches a
// key whose checksum is wrong. Pass it wherever the format is known.
func WithFormat(f authz.Format) Option { return func(l *Log) { l.redact = f.Redact } }

// New returns a Log writing to w. Without WithFormat it redacts with the zero
// authz.Format, which knows no prefix but still replaces every run of 32 or more
// letters and digits that is not all hex digits (a key's body, whatever its prefix).
func New(w io.Writer, opts ...Option) *Log {
	l := &Log{w: w, now: time.Now, redact: authz.Format{}.Redact}
	for _, o := range opts {
		o(l)
	}
	return l
}

// Write writes e as one line, stamping its time when unset, and keeps it among the
// recent events when the Log keeps any: the same redacted event the line holds. Write
// errors are dropped: the audit log must never fail a request.
func (l *Log) Write(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e = l.redactEvent(e)
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	_, _ = l.w.Write(line)
	if l.recent != nil { // under l.mu: kept in the order of the lines
		l.recent.add(e)
	}
	l.mu.Unlock()
}

// redactEvent returns e in UTC with every string it holds redacted; Details is a copy.
func (l *Log) redactEvent(e Event) Event {
	e.Time = e.Time.UTC()
	for _, p := range []*string{&e.Event, &e.KeyID, &e.KeyHint, &e.Owner, &e.Actor, &e.Reason, &e.Source, &e.RequestID} {
		*p = l.redact(*p)
	}
	if e.Details != nil {
		e.Details = l.redactMap(e.Details)
	}
	return e
}

func (l *Log) redactMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[l.redact(k)] = l.redactValue(v)
	}
	return out
}

// redactValue returns v with its strings redacted. Strings, string slices and maps are
// walked directly; numbers, booleans and times hold no text; anything else goes through
// its JSON form, so that whatever Marshal would write is redacted too.
func (l *Log) redactValue(v any) any {
	switch x := v.(type) {
	case nil, bool, int, int64, uint64, float64, time.Time, time.Duration:
		return v
	case string:
		return l.redact(x)
	case []string:
		out := make([]string, len(x))
		for i, s := range x {
			out[i] = l.redact(s)
		}
		return out
	case map[string]any:
		return l.redactMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = l.redactValue(e)
		}
		return out
	case json.Number:
		return v
	case error:
		return l.redact(x.Error())
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String { // authz.Kind and the like
		return l.redact(rv.String())
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return nil
	}
	return l.redactValue(generic)
}

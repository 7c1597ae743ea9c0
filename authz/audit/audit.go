// Package audit writes keygate's audit log: one JSON object per line for every key
// lifecycle event, admin API call and failed authentication.
//
// An event names a key by its id or hint, never by the key itself. A Log is safe for
// concurrent use; a nil *Log discards events, so callers need no checks.
package audit

import (
	"encoding/json"
	"io"
	"sync"
	"time"
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
	mu  sync.Mutex
	w   io.Writer
	now func() time.Time
}

// New returns a Log writing to w.
func New(w io.Writer) *Log { return &Log{w: w, now: time.Now} }

// Write writes e as one line, stamping its time when unset. Write errors are dropped:
// the audit log must never fail a request.
func (l *Log) Write(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = l.now()
	}
	e.Time = e.Time.UTC()
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	_, _ = l.w.Write(line)
	l.mu.Unlock()
}

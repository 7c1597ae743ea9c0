package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"sync"
	"time"
)

// DefaultRecent is how many events a Log keeps in memory unless told otherwise.
const DefaultRecent = 10_000

// SeedBytes is how much of an audit file's end Seed reads at most.
const SeedBytes = 4 << 20

// Kinds lists every event kind, in the order the README gives them.
func Kinds() []string {
	return []string{KeyCreated, KeyRotated, KeyRevoked, KeyScopesChanged, KeyDelivered, KeyExpiredOnUse,
		AuthFailed, SpraySuspected, AdminCall}
}

// WithRecent keeps the last n events in memory as well, for Recent; 0 keeps none.
func WithRecent(n int) Option {
	return func(l *Log) {
		if n > 0 {
			l.recent = &ring{buf: make([]Event, n)}
		}
	}
}

// ring holds the last len(buf) events written, redacted as the log holds them.
type ring struct {
	mu   sync.Mutex
	buf  []Event
	next int // where the next event goes
	n    int // events held
}

func (r *ring) add(e Event) {
	r.mu.Lock()
	r.buf[r.next] = e
	r.next = (r.next + 1) % len(r.buf)
	if r.n < len(r.buf) {
		r.n++
	}
	r.mu.Unlock()
}

// Query selects recent events. Zero fields select everything.
type Query struct {
	Events []string  // any of these kinds
	KeyID  string    // exactly
	Owner  string    // exactly
	Reason string    // exactly
	From   time.Time // at or after
	To     time.Time // before
	Limit  int       // at most this many; 0: all
	// OwnedOnly leaves out events without an owner, whatever Owner is: what a caller
	// scoped to one owner may see is never an ownerless event.
	OwnedOnly bool
}

func (q *Query) match(e *Event) bool {
	switch {
	case q.OwnedOnly && e.Owner == "",
		q.KeyID != "" && e.KeyID != q.KeyID,
		q.Owner != "" && e.Owner != q.Owner,
		q.Reason != "" && e.Reason != q.Reason,
		!q.From.IsZero() && e.Time.Before(q.From),
		!q.To.IsZero() && !e.Time.Before(q.To):
		return false
	}
	if len(q.Events) == 0 {
		return true
	}
	for _, k := range q.Events {
		if e.Event == k {
			return true
		}
	}
	return false
}

// Recent returns the kept events q selects, newest first, and whether more matched
// than q.Limit. ok is false when the Log keeps no events (nil, or WithRecent(0)).
func (l *Log) Recent(q Query) (events []Event, truncated, ok bool) {
	if l == nil || l.recent == nil {
		return nil, false, false
	}
	r := l.recent
	events = []Event{}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := 1; i <= r.n; i++ {
		e := &r.buf[(r.next-i+len(r.buf))%len(r.buf)]
		if !q.match(e) {
			continue
		}
		if q.Limit > 0 && len(events) == q.Limit {
			return events, true, true
		}
		events = append(events, *e) // Details is never changed once kept
	}
	return events, false, true
}

// Seed fills the kept events from the end of an audit log file written before, oldest
// first, reading at most its last SeedBytes: a partial first line, a torn last line and
// any line that is not an event are skipped. Each event is redacted again, with this
// Log's format. It returns how many events it kept; without WithRecent it reads nothing.
func (l *Log) Seed(f *os.File) (int, error) {
	if l == nil || l.recent == nil {
		return 0, nil
	}
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	off := max(st.Size()-SeedBytes, 0)
	buf := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return 0, err
	}
	if off > 0 { // the first line is most likely cut
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			return 0, nil
		}
		buf = buf[i+1:]
	}
	kept := 0
	sc := bufio.NewScanner(bytes.NewReader(buf))
	sc.Buffer(make([]byte, 0, 64<<10), len(buf)+1)
	for sc.Scan() {
		var e Event
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&e); err != nil || e.Event == "" || e.Time.IsZero() || dec.More() {
			continue
		}
		l.recent.add(l.redactEvent(e))
		kept++
	}
	return kept, nil
}

// Keeps reports whether the Log keeps recent events.
func (l *Log) Keeps() bool { return l != nil && l.recent != nil }

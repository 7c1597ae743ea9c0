package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"sync"
	"time"
)

// ErrTooManySessions is returned by a sign-in when the session table is full of live
// sessions.
var ErrTooManySessions = errors.New("console: too many sessions; retry later")

// idLen is the length of an encoded session id or CSRF token: 32 random bytes in
// unpadded base64url.
const idLen = 43

// session is one signed-in operator, as the server keeps it. It never holds a key.
type session struct {
	keyID, owner string
	admin        bool
	cert         bool   // signed in with a client certificate (keyID is "cert:<rule>")
	csrf         string // the X-CSRF-Token every API call must carry
	created      time.Time
	seen         time.Time // last request: the idle expiry counts from here
}

// sessions is the table of live sessions, by the SHA-256 of their id: a lookup's
// timing tells nothing of the ids it holds.
type sessions struct {
	mu       sync.Mutex
	byHash   map[[32]byte]*session
	idle     time.Duration
	maxAge   time.Duration
	max      int // sessions in all
	perKey   int // sessions of one caller; its oldest goes first
	perOwner int // api-keys sessions of one owner, whatever its keys; its oldest goes first
}

func newSessions(idle, maxAge time.Duration, max, perKey, perOwner int) *sessions {
	return &sessions{byHash: map[[32]byte]*session{}, idle: idle, maxAge: maxAge, max: max, perKey: perKey, perOwner: perOwner}
}

// token returns 32 random bytes, encoded.
func token() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// parseID returns the table key of an encoded session id, or false when v is not one:
// exactly 43 base64url characters decoding to 32 bytes, nothing else.
func parseID(v string) ([32]byte, bool) {
	if len(v) != idLen {
		return [32]byte{}, false
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(v)
	if err != nil || len(raw) != 32 {
		return [32]byte{}, false
	}
	return sha256.Sum256(raw), true
}

// csrfMatches reports whether the request's X-CSRF-Token values are exactly the
// session's token: one value, compared in constant time.
func csrfMatches(got []string, want string) bool {
	if len(got) != 1 || len(want) != idLen {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got[0]), []byte(want)) == 1
}

func (s *sessions) live(x *session, now time.Time) bool {
	return now.Sub(x.seen) < s.idle && now.Sub(x.created) < s.maxAge
}

// add stores x and returns its encoded id. Expired sessions are swept first; beyond
// perKey sessions of the same caller its oldest is dropped, and beyond perOwner
// api-keys sessions of the same owner (a tenant can mint keys, and each signs in) the
// owner's oldest is dropped. With max live sessions, an admin's sign-in ends the
// longest-idle api-keys session; any other sign-in is refused rather than signing
// someone else out. So no tenant can lock the admins out.
func (s *sessions) add(x *session, now time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var mine, owners, idlest oldestOf
	for h, y := range s.byHash {
		if !s.live(y, now) {
			delete(s.byHash, h)
			continue
		}
		if y.keyID == x.keyID && y.owner == x.owner {
			mine.see(h, y.created)
		}
		if !y.admin {
			if !x.admin && y.owner == x.owner {
				owners.see(h, y.created)
			}
			idlest.see(h, y.seen)
		}
	}
	switch {
	case mine.n >= s.perKey:
		delete(s.byHash, mine.h)
	case owners.n >= s.perOwner:
		delete(s.byHash, owners.h)
	}
	if len(s.byHash) >= s.max {
		if !x.admin || idlest.n == 0 {
			return "", ErrTooManySessions
		}
		delete(s.byHash, idlest.h)
	}
	id := token()
	h, _ := parseID(id)
	x.created, x.seen = now, now
	s.byHash[h] = x
	return id, nil
}

// oldestOf counts sessions and remembers the one with the earliest time.
type oldestOf struct {
	n  int
	h  [32]byte
	at time.Time
}

func (o *oldestOf) see(h [32]byte, at time.Time) {
	o.n++
	if o.n == 1 || at.Before(o.at) {
		o.h, o.at = h, at
	}
}

// get returns a copy of the live session with the encoded id v; an expired one is
// deleted.
func (s *sessions) get(v string, now time.Time) (session, bool) {
	h, ok := parseID(v)
	if !ok {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.byHash[h]
	if x == nil {
		return session{}, false
	}
	if !s.live(x, now) {
		delete(s.byHash, h)
		return session{}, false
	}
	return *x, true
}

// touch marks the session with the encoded id v seen at now: a request it authorized.
func (s *sessions) touch(v string, now time.Time) {
	if h, ok := parseID(v); ok {
		s.mu.Lock()
		if x := s.byHash[h]; x != nil && now.After(x.seen) {
			x.seen = now
		}
		s.mu.Unlock()
	}
}

// remove deletes the session with the encoded id v, if any.
func (s *sessions) remove(v string) {
	if h, ok := parseID(v); ok {
		s.mu.Lock()
		delete(s.byHash, h)
		s.mu.Unlock()
	}
}

// len returns the number of sessions held, expired ones included.
func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byHash)
}

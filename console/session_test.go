package console

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
)

func TestParseID(t *testing.T) {
	good := token()
	for name, tc := range map[string]struct {
		v  string
		ok bool
	}{
		"a token":          {good, true},
		"empty":            {"", false},
		"one short":        {good[:idLen-1], false},
		"one long":         {good + "A", false},
		"padded":           {base64.URLEncoding.EncodeToString(make([]byte, 32)), false},
		"standard base64":  {strings.Repeat("+", idLen), false},
		"spaces":           {" " + good[1:], false},
		"non-canonical":    {good[:idLen-1] + "B", false}, // the last character's two spare bits set
		"percent-encoded":  {strings.Repeat("%41", 14) + "A", false},
		"unicode":          {strings.Repeat("é", 21) + "A", false},
		"nul":              {strings.Repeat("\x00", idLen), false},
		"all A":            {strings.Repeat("A", idLen), true}, // 32 zero bytes: well-formed, never issued
		"quoted":           {`"` + good[1:idLen-1] + `"`, false},
		"with a separator": {good[:20] + ";" + good[21:], false},
	} {
		t.Run(name, func(t *testing.T) {
			_, ok := parseID(tc.v)
			if ok != tc.ok {
				t.Fatalf("parseID(%q) = %v, want %v", tc.v, ok, tc.ok)
			}
		})
	}
}

func FuzzParseID(f *testing.F) {
	f.Add(token())
	f.Add("")
	f.Add(strings.Repeat("A", idLen))
	f.Add(strings.Repeat("_", idLen))
	f.Fuzz(func(t *testing.T, v string) {
		h, ok := parseID(v)
		if !ok {
			if h != ([32]byte{}) {
				t.Fatal("a refused id has a table key")
			}
			return
		}
		raw, err := base64.RawURLEncoding.Strict().DecodeString(v)
		if err != nil || len(raw) != 32 || len(v) != idLen {
			t.Fatalf("parseID accepted %q", v)
		}
		if base64.RawURLEncoding.EncodeToString(raw) != v {
			t.Fatalf("parseID accepted a non-canonical encoding %q", v)
		}
	})
}

func TestCSRFMatches(t *testing.T) {
	want := token()
	for name, tc := range map[string]struct {
		got []string
		ok  bool
	}{
		"the token":         {[]string{want}, true},
		"none":              {nil, false},
		"empty":             {[]string{""}, false},
		"twice":             {[]string{want, want}, false},
		"another":           {[]string{token()}, false},
		"prefix":            {[]string{want[:idLen-1]}, false},
		"longer":            {[]string{want + "x"}, false},
		"upper case":        {[]string{strings.ToUpper(want)}, want == strings.ToUpper(want)},
		"with spaces":       {[]string{" " + want}, false},
		"comma-joined pair": {[]string{want + "," + want}, false},
	} {
		t.Run(name, func(t *testing.T) {
			if got := csrfMatches(tc.got, want); got != tc.ok {
				t.Fatalf("csrfMatches(%q) = %v, want %v", tc.got, got, tc.ok)
			}
		})
	}
	if csrfMatches([]string{""}, "") {
		t.Fatal("an empty token matched a session without one")
	}
}

func FuzzCSRFMatches(f *testing.F) {
	want := token()
	f.Add(want, "")
	f.Add(want, want)
	f.Add("", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		got := []string{a}
		if b != "" {
			got = append(got, b)
		}
		if csrfMatches(got, want) && (len(got) != 1 || a != want) {
			t.Fatalf("csrfMatches(%q) accepted", got)
		}
	})
}

func TestSameOrigin(t *testing.T) {
	for name, tc := range map[string]struct {
		tls     bool
		host    string
		headers map[string][]string
		ok      bool
	}{
		"no headers (a CLI)":         {false, "127.0.0.1:9003", nil, true},
		"same origin":                {false, "127.0.0.1:9003", map[string][]string{"Origin": {"http://127.0.0.1:9003"}, "Sec-Fetch-Site": {"same-origin"}}, true},
		"same origin over TLS":       {true, "admin.example:9003", map[string][]string{"Origin": {"https://admin.example:9003"}}, true},
		"scheme differs":             {true, "admin.example:9003", map[string][]string{"Origin": {"http://admin.example:9003"}}, false},
		"port differs":               {false, "127.0.0.1:9003", map[string][]string{"Origin": {"http://127.0.0.1:9004"}}, false},
		"other site":                 {false, "127.0.0.1:9003", map[string][]string{"Origin": {"https://evil.example"}}, false},
		"null origin":                {false, "127.0.0.1:9003", map[string][]string{"Origin": {"null"}}, false},
		"two origins":                {false, "127.0.0.1:9003", map[string][]string{"Origin": {"http://127.0.0.1:9003", "http://127.0.0.1:9003"}}, false},
		"origin with a path":         {false, "127.0.0.1:9003", map[string][]string{"Origin": {"http://127.0.0.1:9003/"}}, false},
		"cross-site fetch":           {false, "127.0.0.1:9003", map[string][]string{"Sec-Fetch-Site": {"cross-site"}}, false},
		"same-site fetch":            {false, "127.0.0.1:9003", map[string][]string{"Sec-Fetch-Site": {"same-site"}}, false},
		"user navigation":            {false, "127.0.0.1:9003", map[string][]string{"Sec-Fetch-Site": {"none"}}, true},
		"two fetch-site values":      {false, "127.0.0.1:9003", map[string][]string{"Sec-Fetch-Site": {"same-origin", "cross-site"}}, false},
		"fetch-site in another case": {false, "127.0.0.1:9003", map[string][]string{"Sec-Fetch-Site": {"Same-Origin"}}, false},
		"no host":                    {false, "", map[string][]string{"Origin": {"http://"}}, false},
		"host case":                  {false, "LOCALHOST:9003", map[string][]string{"Origin": {"http://localhost:9003"}}, true},
	} {
		t.Run(name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/api-keys", nil)
			r.Host = tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, vs := range tc.headers {
				for _, v := range vs {
					r.Header.Add(k, v)
				}
			}
			if got := admin.SameOrigin(r); got != tc.ok {
				t.Fatalf("SameOrigin = %v, want %v", got, tc.ok)
			}
		})
	}
}

func TestSessionsExpiryAndCaps(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	s := newSessions(15*time.Minute, 8*time.Hour, 3, 2, 10)
	a1, err := s.add(&session{keyID: "key_a", csrf: token()}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.get(a1, now.Add(14*time.Minute)); !ok {
		t.Fatal("a session ended before its idle timeout")
	}
	s.touch(a1, now.Add(14*time.Minute))
	if _, ok := s.get(a1, now.Add(28*time.Minute)); !ok {
		t.Fatal("a request did not extend the idle timeout")
	}
	if _, ok := s.get(a1, now.Add(30*time.Minute)); ok {
		t.Fatal("an idle session lived on")
	}
	if s.len() != 0 {
		t.Fatal("an expired session was kept")
	}
	// The absolute expiry holds however busy the session.
	b, _ := s.add(&session{keyID: "key_b", csrf: token()}, now)
	for m := time.Duration(0); m < 8*time.Hour; m += 10 * time.Minute {
		s.touch(b, now.Add(m))
	}
	if _, ok := s.get(b, now.Add(8*time.Hour)); ok {
		t.Fatal("a session outlived its absolute expiry")
	}
	// Per caller: the oldest goes. In all: further sign-ins are refused.
	c1, _ := s.add(&session{keyID: "key_c", csrf: token()}, now)
	c2, _ := s.add(&session{keyID: "key_c", csrf: token()}, now.Add(time.Second))
	c3, _ := s.add(&session{keyID: "key_c", csrf: token()}, now.Add(2*time.Second))
	if _, ok := s.get(c1, now.Add(3*time.Second)); ok {
		t.Fatal("a caller's oldest session survived its cap")
	}
	for _, v := range []string{c2, c3} {
		if _, ok := s.get(v, now.Add(3*time.Second)); !ok {
			t.Fatal("a caller's newer session was dropped")
		}
	}
	if _, err := s.add(&session{keyID: "key_d", csrf: token()}, now.Add(3*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.add(&session{keyID: "key_e", csrf: token()}, now.Add(3*time.Second)); err != ErrTooManySessions {
		t.Fatalf("a sign-in beyond the cap: %v", err)
	}
	s.remove(c2)
	if _, ok := s.get(c2, now.Add(3*time.Second)); ok {
		t.Fatal("a removed session lived on")
	}
	// Ids that do not parse never reach the table.
	for _, v := range []string{"", "x", c3 + "x", strings.ToUpper(c3)} {
		if v == c3 {
			continue
		}
		if _, ok := s.get(v, now); ok {
			t.Fatalf("get(%q) found a session", v)
		}
	}
}

// A tenant that mints api-keys keys and signs each in cannot fill the table: its owner
// keeps at most perOwner sessions, and an admin's sign-in into a full table ends the
// longest-idle api-keys session instead of being refused.
func TestSessionsTenantCannotLockAdminsOut(t *testing.T) {
	now := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	s := newSessions(15*time.Minute, 8*time.Hour, 6, 2, 3)
	var tenant []string
	for i := range 8 { // 4 keys of one owner, 2 sign-ins each
		v, err := s.add(&session{keyID: fmt.Sprintf("key_t%d", i/2), owner: "acct_t", csrf: token()}, now.Add(time.Duration(i)*time.Second))
		if err != nil {
			t.Fatalf("tenant sign-in %d: %v", i, err)
		}
		tenant = append(tenant, v)
	}
	if got := s.len(); got != 3 {
		t.Fatalf("one owner holds %d sessions, want its cap 3", got)
	}
	at := now.Add(10 * time.Second)
	for i, v := range tenant {
		if _, ok := s.get(v, at); ok != (i >= 5) {
			t.Fatalf("tenant session %d live=%v: the owner's oldest must go first", i, ok)
		}
	}
	// Other owners fill the rest of the table; then an admin still signs in.
	for i := range 3 {
		if _, err := s.add(&session{keyID: fmt.Sprintf("key_o%d", i), owner: fmt.Sprintf("acct_o%d", i), csrf: token()}, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.add(&session{keyID: "key_x", owner: "acct_x", csrf: token()}, at); err != ErrTooManySessions {
		t.Fatalf("a tenant's sign-in into a full table: %v", err)
	}
	s.touch(tenant[6], at)
	s.touch(tenant[7], at)
	a, err := s.add(&session{keyID: "key_admin", owner: "acct_ops", admin: true, csrf: token()}, at.Add(time.Second))
	if err != nil {
		t.Fatalf("an admin's sign-in into a full table: %v", err)
	}
	if _, ok := s.get(a, at.Add(time.Second)); !ok {
		t.Fatal("the admin's session is not live")
	}
	if _, ok := s.get(tenant[5], at.Add(time.Second)); ok {
		t.Fatal("the longest-idle api-keys session was kept")
	}
	if s.len() != 6 {
		t.Fatalf("%d sessions, want 6", s.len())
	}
}

func TestCookieRefusesDuplicates(t *testing.T) {
	r := httptest.NewRequest("GET", "/console/session", nil)
	r.Header.Add("Cookie", "keygate-console=a; keygate-console=b")
	if _, ok := cookie(r); ok {
		t.Fatal("two session cookies were accepted")
	}
	r = httptest.NewRequest("GET", "/console/session", nil)
	r.Header.Add("Cookie", "keygate-console=a")
	if v, ok := cookie(r); !ok || v != "a" {
		t.Fatal("the session cookie was not read")
	}
	r.TLS = &tls.ConnectionState{}
	if _, ok := cookie(r); ok {
		t.Fatal("over TLS, a cookie without the __Host- prefix was accepted")
	}
}

func TestHeaders(t *testing.T) {
	h := Headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/console/", nil))
	for k, v := range map[string]string{"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"} {
		if got := w.Header().Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
}

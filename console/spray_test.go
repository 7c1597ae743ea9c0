package console

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/vaultstore"
)

// Keys guessed at the console's sign-in or at the admin API count against the
// guessing client's own share of the budget of unknown keys, as keys guessed through
// Envoy do: the client is marked a sprayer and gets 429s, and another client's valid
// key still signs in. (Without a source, the guesses drained the shared budget and a
// valid admin key from anyone was refused lookup_throttled.)
func TestGuessedKeysCountAgainstTheGuesser(t *testing.T) {
	var sprays atomic.Int32
	fx := newFixtureWith(t, &vaultstore.CacheConfig{MissRate: 1, MissBurst: 40,
		SourceMissRate: 1, SourceMissBurst: 10, SprayFailures: 5,
		OnSpraySuspected: func(string, int) { sprays.Add(1) }})
	adminKey, _ := fx.mk(t, authz.KeySpec{Name: "ops", Owner: "ops", Scopes: []string{admin.ScopeAdmin}})
	guesser := fx.browser(nil)
	browser := map[string]string{"Content-Type": "application/json", "Origin": fx.url, "Sec-Fetch-Site": "same-origin"}
	for _, at := range []struct {
		name   string
		method string
		path   string
		header func(key string) map[string]string
		body   func(key string) string
	}{
		{"sign-in", "POST", "/console/session", func(string) map[string]string { return browser },
			func(key string) string { return `{"key":"` + key + `"}` }},
		{"admin API", "GET", "/api-keys", func(key string) map[string]string { return map[string]string{"X-API-Key": key} },
			func(string) string { return "" }},
	} {
		t.Run(at.name, func(t *testing.T) {
			statuses := map[int]int{}
			for range 30 {
				guess, _, err := fx.format.Issue(authz.KeySpec{Name: "guess", Owner: "x"}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				statuses[fx.do(t, guesser, at.method, at.path, at.body(guess), at.header(guess)).status]++
			}
			if sprays.Load() == 0 || statuses[http.StatusTooManyRequests] == 0 {
				t.Fatalf("30 unknown keys from one client: statuses %v, spray reports %d; want 429s and a report", statuses, sprays.Load())
			}
			if statuses[http.StatusServiceUnavailable] != 0 {
				t.Fatalf("the guesses drained the shared budget: statuses %v", statuses)
			}
		})
	}
	if n := sprays.Load(); n != 1 {
		t.Fatalf("the guessing client was reported %d times, want once", n)
	}
	// Another client (another loopback address) signs in with a valid key it has never
	// used: its own share is untouched.
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: fx.roots},
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext}}
	a := fx.do(t, other, "POST", "/console/session", `{"key":"`+adminKey+`"}`, browser)
	if a.status != http.StatusCreated {
		t.Fatalf("another client's valid admin key after the guesses: %d %s", a.status, a.body)
	}
}

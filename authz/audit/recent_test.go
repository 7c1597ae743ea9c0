package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

var t0 = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)

// TestRecentBound: the ring keeps the last n events, newest first, and never more.
func TestRecentBound(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, WithRecent(5))
	for i := range 12 {
		l.Write(Event{Time: t0.Add(time.Duration(i) * time.Second), Event: AdminCall, Status: 200 + i})
	}
	got, truncated, ok := l.Recent(Query{})
	if !ok || truncated || len(got) != 5 {
		t.Fatalf("%d events, truncated %v, ok %v", len(got), truncated, ok)
	}
	for i, e := range got {
		if e.Status != 211-i {
			t.Fatalf("event %d has status %d, want %d (newest first)", i, e.Status, 211-i)
		}
	}
	if n := strings.Count(buf.String(), "\n"); n != 12 {
		t.Fatalf("the file got %d lines, want all 12", n)
	}
	if _, _, ok := New(&buf).Recent(Query{}); ok {
		t.Fatal("a Log without WithRecent answers Recent")
	}
	if _, _, ok := New(&buf, WithRecent(0)).Recent(Query{}); ok {
		t.Fatal("WithRecent(0) keeps events")
	}
	var nilLog *Log
	if _, _, ok := nilLog.Recent(Query{}); ok || nilLog.Keeps() {
		t.Fatal("a nil Log keeps events")
	}
}

func TestRecentQuery(t *testing.T) {
	l := New(&bytes.Buffer{}, WithRecent(100))
	evs := []Event{
		{Event: AuthFailed, KeyID: "key_A", Owner: "acct_a", Reason: "revoked"},
		{Event: AuthFailed, Reason: "unknown_key"},
		{Event: SpraySuspected, Source: "10.0.0.9"},
		{Event: KeyCreated, KeyID: "key_B", Owner: "acct_b"},
		{Event: AdminCall, Actor: "key_A", Owner: "acct_a", Status: 200},
		{Event: KeyRevoked, KeyID: "key_A", Owner: "acct_a"},
	}
	for i, e := range evs {
		e.Time = t0.Add(time.Duration(i) * time.Minute)
		l.Write(e)
	}
	ids := func(q Query) string {
		got, truncated, _ := l.Recent(q)
		var s []string
		for _, e := range got {
			s = append(s, fmt.Sprint(int(e.Time.Sub(t0)/time.Minute)))
		}
		if truncated {
			s = append(s, "+")
		}
		return strings.Join(s, ",")
	}
	for name, tc := range map[string]struct {
		q    Query
		want string
	}{
		"all":                 {Query{}, "5,4,3,2,1,0"},
		"one kind":            {Query{Events: []string{AuthFailed}}, "1,0"},
		"two kinds":           {Query{Events: []string{AuthFailed, SpraySuspected}}, "2,1,0"},
		"key":                 {Query{KeyID: "key_A"}, "5,0"},
		"owner":               {Query{Owner: "acct_a"}, "5,4,0"},
		"owned only":          {Query{OwnedOnly: true}, "5,4,3,0"},
		"owned only, a kind":  {Query{OwnedOnly: true, Events: []string{SpraySuspected, AuthFailed}}, "0"},
		"reason":              {Query{Reason: "unknown_key"}, "1"},
		"from inclusive":      {Query{From: t0.Add(4 * time.Minute)}, "5,4"},
		"to exclusive":        {Query{To: t0.Add(2 * time.Minute)}, "1,0"},
		"limit":               {Query{Limit: 2}, "5,4,+"},
		"limit exactly met":   {Query{Owner: "acct_a", Limit: 3}, "5,4,0"},
		"limit after filters": {Query{Owner: "acct_a", Limit: 2}, "5,4,+"},
	} {
		if got := ids(tc.q); got != tc.want {
			t.Errorf("%s: %q, want %q", name, got, tc.want)
		}
	}
}

// TestRecentRedacted: what the ring keeps is what the line holds, a pasted key
// replaced by its hint, in every field and detail.
func TestRecentRedacted(t *testing.T) {
	f, _ := authz.NewFormat("mgx-sk-")
	key, err := f.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l := New(&buf, WithFormat(f), WithRecent(10))
	l.Write(Event{Event: AdminCall, KeyID: key, Owner: key, Actor: key, Reason: key, Source: key, RequestID: key,
		Details: map[string]any{"path": "/api-keys/" + key, key: []string{key}}})
	got, _, _ := l.Recent(Query{})
	raw, _ := json.Marshal(got)
	if bytes.Contains(raw, []byte(key)) || bytes.Contains(raw, []byte(key[7:33])) {
		t.Fatalf("the ring holds the key: %s", raw)
	}
	if line := strings.TrimSpace(buf.String()); string(raw) != "["+line+"]" {
		t.Fatalf("the ring holds\n%s\nthe line\n%s", raw, line)
	}
}

// TestSeed reads a file's tail: the partial first line, bad lines and a torn last line
// are skipped; the rest is kept oldest first, and redacted again.
func TestSeed(t *testing.T) {
	f, _ := authz.NewFormat("mgx-sk-")
	key, _ := f.Generate(nil)
	path := filepath.Join(t.TempDir(), "audit.log")
	var b bytes.Buffer
	line := func(i int, extra string) {
		fmt.Fprintf(&b, `{"time":"%s","event":"admin.call","status":%d%s}`+"\n", t0.Add(time.Duration(i)*time.Second).Format(time.RFC3339), i, extra)
	}
	// More than SeedBytes: the first events are beyond reach, one is cut in two.
	pad := strings.Repeat("a", 1000) // hex: not key-shaped
	for i := 0; b.Len() < SeedBytes+10_000; i++ {
		line(i, `,"details":{"pad":"`+pad+`"}`)
	}
	first := strings.Count(b.String(), "\n")
	line(first, `,"source":"`+key+`"`) // written by an older keygate that did not know the prefix
	b.WriteString("not json\n")
	b.WriteString(`{"event":"admin.call"}` + "\n")                                  // no time
	b.WriteString(`{"time":"2026-11-24T10:00:00Z","event":"admin.call"} {}` + "\n") // two values
	line(first+1, "")
	b.WriteString(`{"time":"2026-11-24T11:00:00Z","event":"key.revo`) // torn
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	l := New(&bytes.Buffer{}, WithFormat(f), WithRecent(1_000_000))
	n, err := l.Seed(fh)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := l.Recent(Query{})
	if n != len(got) || n < 100 || n > SeedBytes/1000 {
		t.Fatalf("kept %d (%d): want about %d events", n, len(got), SeedBytes/1050)
	}
	if got[0].Status != first+1 || got[1].Status != first || got[1].Source != f.Hint(key) {
		t.Fatalf("newest: %+v, %+v", got[0], got[1])
	}
	// Every kept event is whole: the one cut at the window's start is not among them.
	for i := 2; i < len(got); i++ {
		if got[i].Details["pad"] != pad || got[i].Status != got[i-1].Status-1 {
			t.Fatalf("event %d: %+v after %+v", i, got[i], got[i-1])
		}
	}
	if oldest := got[len(got)-1].Status; oldest != first-len(got)+2 || oldest == 0 {
		t.Fatalf("oldest kept has status %d", oldest)
	}

	// A small ring keeps the newest of what it read.
	l = New(&bytes.Buffer{}, WithRecent(3))
	if n, err := l.Seed(fh); err != nil || n < 100 {
		t.Fatal(n, err)
	}
	if got, _, _ := l.Recent(Query{}); len(got) != 3 || got[0].Status != first+1 {
		t.Fatalf("%+v", got)
	}
	// Without a ring, nothing is read.
	if n, err := New(&bytes.Buffer{}).Seed(fh); n != 0 || err != nil {
		t.Fatal(n, err)
	}
}

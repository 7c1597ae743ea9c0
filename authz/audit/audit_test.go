package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

func TestWrite(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	l.now = func() time.Time { return time.Date(2025, 7, 14, 12, 0, 0, 0, time.FixedZone("CEST", 7200)) }
	l.Write(Event{Event: KeyRevoked, KeyID: "key_AAAAAAAAAAAAAAAA", Actor: "cli"})
	l.Write(Event{Event: AuthFailed, Reason: "bad_checksum", Status: 401, Source: "10.0.0.7:53122", RequestID: "r1"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if lines[0] != `{"time":"2025-07-14T10:00:00Z","event":"key.revoked","key_id":"key_AAAAAAAAAAAAAAAA","actor":"cli"}` {
		t.Fatalf("line %s", lines[0])
	}
	var e Event
	if err := json.Unmarshal([]byte(lines[1]), &e); err != nil || e.Reason != "bad_checksum" || e.Source != "10.0.0.7:53122" {
		t.Fatalf("%+v %v", e, err)
	}
	var nilLog *Log
	nilLog.Write(Event{Event: KeyCreated}) // discards, no panic
}

// TestRedaction writes a pasted key into every field an event has and finds neither the
// key nor its random part in the line, with the deployment's format and without it.
func TestRedaction(t *testing.T) {
	f, _ := authz.NewFormat("mgx-sk-")
	key, err := f.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	random := key[len("mgx-sk-") : len("mgx-sk-")+authz.RandomLen]
	bad := key[:len(key)-1] + "0"
	if bad == key {
		bad = key[:len(key)-1] + "1"
	}
	type nested struct {
		Path string   `json:"path"`
		List []string `json:"list"`
	}
	for name, l := range map[string]func(*bytes.Buffer) *Log{
		"with format":    func(b *bytes.Buffer) *Log { return New(b, WithFormat(f)) },
		"without format": func(b *bytes.Buffer) *Log { return New(b) },
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			log := l(&buf)
			for _, k := range []string{key, bad, "MGX-SK-" + key[7:], "/api-keys/" + key + "/rotate"} {
				log.Write(Event{Event: AdminCall, KeyID: k, KeyHint: k, Owner: k, Actor: k, Reason: k, Source: k, RequestID: k,
					Details: map[string]any{
						"path": k, k: "as a detail key", "scopes": []string{"a", k}, "kind": authz.Kind(k),
						"nested": map[string]any{"deeper": []any{k, 3, true}}, "struct": nested{Path: k, List: []string{k}},
						"error": errors.New("no such key " + k), "count": 7,
					}})
			}
			out := buf.String()
			if strings.Contains(out, random) || strings.Contains(out, bad[7:7+authz.RandomLen]) {
				t.Fatalf("the audit log holds key material:\n%s", out)
			}
			if !strings.Contains(out, `"count":7`) || !strings.Contains(out, key[len(key)-4:]) {
				t.Fatalf("redaction lost more than the key:\n%s", out)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if !json.Valid([]byte(line)) {
					t.Fatalf("invalid JSON line %s", line)
				}
			}
		})
	}
}

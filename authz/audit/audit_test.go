package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
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

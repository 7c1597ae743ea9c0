package duration

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90d": 90 * 24 * time.Hour, "0d": 0, "150ms": 150 * time.Millisecond, "1h30m": 90 * time.Minute,
	} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "1.5d", "-1d", "99999999d", "ten", "3 days"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestMessage: every rejected value names itself and says what to write instead, in one
// form, whatever went wrong.
func TestMessage(t *testing.T) {
	for _, bad := range []string{"5 minutes", "90days", "", "1.5d", "ten", "1y", "-d", "1h30"} {
		_, err := Parse(bad)
		if err == nil {
			t.Fatalf("Parse(%q) accepted", bad)
		}
		want := `invalid duration "` + bad + `": ` + Hint
		if got := err.Error(); got != want && got != want+"; days are whole (30d)" {
			t.Errorf("Parse(%q): %q, want %q", bad, got, want)
		}
	}
	if _, err := Parse("99999999d"); err == nil || err.Error() != `invalid duration "99999999d": want whole days from 0d to 36500d` {
		t.Errorf("out of range: %v", err)
	}
}

// Package golden compares bodies with golden files in tests.
package golden

import (
	"os"
	"path/filepath"
	"testing"
)

// Check compares body (plus a final newline) with the golden file at path, first
// rewriting the file when update is set (a test's -update flag).
func Check(t testing.TB, path, body string, update bool) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := body + "\n"; got != string(want) {
		t.Fatalf("body differs from %s\n got: %s\nwant: %s", path, got, want)
	}
}

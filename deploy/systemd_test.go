package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const unitFile = "systemd/keygate.service"

// verify runs systemd-analyze verify on the unit with its binary path pointed at a stand-in
// executable, and returns what it printed: any warning counts.
func verify(t *testing.T, unit string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "keygate")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit = strings.ReplaceAll(unit, "/usr/local/bin/keygate", bin)
	path := filepath.Join(dir, "keygate.service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
	if err != nil {
		return string(out) + err.Error()
	}
	return string(out)
}

func TestSystemdUnit(t *testing.T) {
	raw, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	directives := map[string]bool{}
	for _, l := range strings.Split(unit, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			directives[l] = true
		}
	}
	for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
		"User=keygate", "ExecReload=/bin/kill -HUP $MAINPID", "CapabilityBoundingSet=",
		"ExecStart=/usr/local/bin/keygate serve --config /etc/keygate/keygate.yaml"} {
		if !directives[want] {
			t.Errorf("%s lacks %q", unitFile, want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (Debian: apt-get install systemd); the directives were checked, not the unit")
	}
	if out := verify(t, unit); out != "" {
		t.Errorf("systemd-analyze verify %s:\n%s", unitFile, out)
	}
	// The check can fail: a misspelt directive is reported.
	if out := verify(t, strings.Replace(unit, "NoNewPrivileges=", "NoNewPrivilege=", 1)); !strings.Contains(out, "NoNewPrivilege") {
		t.Errorf("systemd-analyze verify did not report a misspelt directive: %q", out)
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/pgtest"
)

// demoCase is one of the commands make dev prints: what the comment above it promises,
// and what its output must contain.
type demoCase struct {
	comment string // the start of the "# …" line above the command
	want    []string
	notWant []string
}

var demoCases = []demoCase{
	{"allowed: the echo", []string{`"x-api-key-id": "key_`, `"x-api-key-scopes": "chat:completions,models:read"`,
		`"x-forwarded-client-cert": "`, `"x-request-id": "req_`, "HTTP 200"}, []string{`"authorization"`}},
	{"allowed: a model", []string{`"path": "/v1/chat/completions"`, `"body": "{\"model\":\"gpt-4o-mini\"}"`, "HTTP 200"}, nil},
	{"missing key", []string{"AUTH_MISSING", "HTTP 401"}, nil},
	{"bad key", []string{"AUTH_KEY_INVALID", "HTTP 401"}, nil},
	{"insufficient scope", []string{"AUTH_INSUFFICIENT_SCOPE", "HTTP 403"}, nil},
	{"model not allowed", []string{"AUTH_MODEL_NOT_ALLOWED", "HTTP 403"}, nil},
	{"rate limited", []string{"HTTP 200\n", "HTTP 429"}, nil},
	{"no client certificate", []string{"HTTP 000"}, []string{"x-api-key-id"}},
}

// TestDevDemo runs make dev's script as a user would, runs every curl command it prints
// and checks each outcome and the usage API's counts of them, checks that a second run
// is refused while it runs and that no secret is on any command line, then stops it
// with Ctrl-C (SIGINT to its process group) and checks that nothing it started is left;
// with the default SQLite usage store, and with USAGE=postgres.
func TestDevDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Vault, keygate and the echo server as make dev does")
	}
	t.Run("sqlite", func(t *testing.T) { devDemo(t, "sqlite") })
	t.Run("postgres", func(t *testing.T) {
		if pgtest.BinDir() == "" {
			t.Skip("make dev USAGE=postgres needs PostgreSQL (apt-get install postgresql)")
		}
		devDemo(t, "postgres")
	})
}

func devDemo(t *testing.T, usage string) {
	for _, tool := range []string{"bash", "curl", "flock"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("make dev needs %s", tool)
		}
	}
	vault(t) // the shared Vault build: the script finds the binary cached
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	env := append(os.Environ(), "KEYGATE_DEV_DIR="+dir, "VERSION=v0.0.0-demo-test", "KEYGATE_DEV_USAGE="+usage)
	var ports []string
	names := []string{"VAULT", "GRPC", "HTTP", "ADMIN", "TERMINATE", "ECHO"}
	if usage == "postgres" {
		names = append(names, "POSTGRES")
	}
	for _, name := range names {
		_, port, _ := net.SplitHostPort(freeAddr(t))
		ports = append(ports, port)
		env = append(env, "KEYGATE_DEV_"+name+"_PORT="+port)
	}

	cmd := exec.Command("bash", "scripts/dev.sh")
	cmd.Dir, cmd.Env = root, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT) // Ctrl-C in a terminal
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Errorf("make dev did not stop within 30s of Ctrl-C")
			<-exited
		}
	}
	t.Cleanup(stop)

	// Read the banner up to its last line, then keep draining.
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()
	var banner []string
	deadline := time.After(10 * time.Minute) // a first Vault build on a fresh machine
read:
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("make dev ended before it was ready:\n%s\n%s", strings.Join(banner, "\n"), stderr.String())
			}
			banner = append(banner, l)
			if strings.HasPrefix(l, "Ctrl-C stops") {
				break read
			}
		case <-deadline:
			t.Fatalf("make dev not ready:\n%s\n%s", strings.Join(banner, "\n"), stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	if !strings.Contains(banner[1], "v0.0.0-demo-test") {
		t.Errorf("banner does not show the stamped version: %q", banner[1])
	}

	commands := map[string]string{}
	for i := 0; i+1 < len(banner); i++ {
		if c, ok := strings.CutPrefix(banner[i], "# "); ok && strings.HasPrefix(banner[i+1], "  ") {
			commands[c] = strings.TrimSpace(banner[i+1])
		}
	}
	for _, dc := range demoCases {
		t.Run(dc.comment, func(t *testing.T) {
			var command string
			for c, line := range commands {
				if strings.HasPrefix(c, dc.comment) {
					command = line
				}
			}
			if command == "" {
				t.Fatalf("make dev printed no command for %q:\n%s", dc.comment, strings.Join(banner, "\n"))
			}
			sh := exec.Command("bash", "-c", command)
			sh.Dir = root
			out, _ := sh.CombinedOutput()
			for _, w := range dc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%s\nprinted:\n%s\nwant %q in it", command, out, w)
				}
			}
			for _, w := range dc.notWant {
				if strings.Contains(string(out), w) {
					t.Errorf("%s\nprinted:\n%s\nwant no %q in it", command, out, w)
				}
			}
		})
	}

	// The usage API counts the full key's checks above: two allowed, one model refused.
	usageCmd := commands["usage: the full key's checks by outcome, today (counts appear within 2s)"]
	if usageCmd == "" {
		t.Fatalf("make dev printed no usage command:\n%s", strings.Join(banner, "\n"))
	}
	var got map[string]int64
	var out []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		sh := exec.Command("bash", "-c", usageCmd)
		sh.Dir = root
		out, _ = sh.CombinedOutput()
		var resp struct {
			Total  int64 `json:"total"`
			Points []struct {
				Outcome string `json:"outcome"`
				Count   int64  `json:"count"`
			} `json:"points"`
		}
		got = map[string]int64{}
		if json.Unmarshal(out, &resp) == nil {
			for _, p := range resp.Points {
				got[p.Outcome] += p.Count
			}
			if resp.Total >= 3 || time.Now().After(deadline) {
				break
			}
		} else if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if fmt.Sprint(got) != "map[allowed:2 model_not_allowed:1]" {
		t.Errorf("%s\nprinted:\n%s\nwant allowed 2, model_not_allowed 1", usageCmd, out)
	}

	// A second make dev with the same state directory, then one with other state but the
	// same ports: both refuse, saying why.
	for _, tc := range []struct {
		name, want string
		env        []string
	}{
		{"same directory", "already running", env},
		{"same ports", "already in use", append(env, "KEYGATE_DEV_DIR="+t.TempDir())},
	} {
		second := exec.Command("bash", "scripts/dev.sh")
		second.Dir, second.Env = root, tc.env
		out, err := second.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("second make dev (%s): err %v, output:\n%s\nwant %q", tc.name, err, out, tc.want)
		}
	}

	// No secret on any command line, and the state is private.
	secrets := demoSecrets(t, dir)
	if usage == "postgres" {
		pw, err := os.ReadFile(filepath.Join(dir, "postgres.password"))
		if err != nil || len(pw) < 32 {
			t.Fatalf("postgres.password: %v (%d bytes)", err, len(pw))
		}
		secrets = append(secrets, string(pw))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("a secret is on the command line of %s: %q", p, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
			}
		}
	}
	checkModes(t, dir)

	pids := readPids(t, dir)
	if want := map[string]int{"sqlite": 3, "postgres": 4}[usage]; len(pids) != want {
		t.Errorf("make dev started %d processes, want %d (Vault, echo, keygate; PostgreSQL with USAGE=postgres)", len(pids), want)
	}
	stop()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d is still running after Ctrl-C", pid)
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("make dev's process group is still there after Ctrl-C")
	}
	for _, port := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Errorf("port %s still taken after Ctrl-C: %v", port, err)
			continue
		}
		l.Close()
	}
	if _, err := os.Stat(filepath.Join(dir, "vault.env")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("vault.env (a dead token) left behind: %v", err)
	}
}

// demoSecrets returns the Vault token and every demo key.
func demoSecrets(t *testing.T, dir string) []string {
	t.Helper()
	var secrets []string
	env, err := os.ReadFile(filepath.Join(dir, "vault.env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(env), "\n") {
		if tok, ok := strings.CutPrefix(l, "VAULT_TOKEN="); ok && tok != "" {
			secrets = append(secrets, tok)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "keys", "*"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "Authorization: Bearer "); ok && k != "" {
			secrets = append(secrets, k)
		}
	}
	if len(secrets) != 6 { // token, full, read-only, trial, admin, typo
		t.Fatalf("found %d secrets in %s, want 6", len(secrets), dir)
	}
	return secrets
}

// checkModes checks that the demo's state is readable by its owner only.
func checkModes(t *testing.T, dir string) {
	t.Helper()
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readPids(t *testing.T, dir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "pids"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pids file: %v", err)
		}
		pids = append(pids, pid)
	}
	return pids
}

package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/safebuf"
	"github.com/keygate/keygate/internal/vaulttest"
)

// configPaths lists every field of keygate's config file as a dotted path: a map's
// entries are written NAME (rate_limits.plans.NAME.per_minute), a list's items [].
func configPaths(t reflect.Type, prefix string, out *[]string) {
	switch t.Kind() {
	case reflect.Pointer:
		configPaths(t.Elem(), prefix, out)
		return
	case reflect.Map:
		configPaths(t.Elem(), prefix+".NAME", out)
		return
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct || t.Elem().Kind() == reflect.Pointer {
			configPaths(t.Elem(), prefix+"[]", out)
			return
		}
	case reflect.Struct:
		if t != reflect.TypeOf(configDuration(0)) {
			for i := range t.NumField() {
				f := t.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				if name == "-" || !f.IsExported() {
					continue
				}
				if name == "" {
					name = f.Name
				}
				p := name
				if prefix != "" {
					p = prefix + "." + name
				}
				configPaths(f.Type, p, out)
			}
			return
		}
	}
	*out = append(*out, prefix)
}

// TestConfigurationReferenceIsComplete checks docs/configuration.md against the config
// struct: every field is documented (as `path`), and every documented path exists.
func TestConfigurationReferenceIsComplete(t *testing.T) {
	var paths []string
	configPaths(reflect.TypeOf(config{}), "", &paths)
	sort.Strings(paths)
	raw, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	known := map[string]bool{}
	for _, p := range paths {
		known[p] = true
		if !strings.Contains(doc, "| `"+p+"` |") {
			t.Errorf("docs/configuration.md does not document %s (a table row starting | `%s` |)", p, p)
		}
	}
	for _, l := range strings.Split(doc, "\n") {
		if rest, ok := strings.CutPrefix(l, "| `"); ok {
			p, _, _ := strings.Cut(rest, "`")
			if !known[p] && !strings.HasPrefix(p, "-") && !strings.HasPrefix(p, "VAULT_") && !strings.HasPrefix(p, "OTEL_") && !strings.HasPrefix(p, "KEYGATE_") {
				t.Errorf("docs/configuration.md documents %s, which is not a config field", p)
			}
		}
	}
}

// TestDenyProfileReference checks that docs/deny-profiles.md shows every golden deny body.
func TestDenyProfileReference(t *testing.T) {
	raw, err := os.ReadFile("../../docs/deny-profiles.md")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../../testdata/deny/*/*.json")
	if len(files) == 0 {
		t.Fatal("no golden deny bodies")
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		profile, reason := filepath.Base(filepath.Dir(f)), strings.TrimSuffix(filepath.Base(f), ".json")
		if !strings.Contains(string(raw), "```json\n"+strings.TrimSpace(string(body))+"\n```") {
			t.Errorf("docs/deny-profiles.md lacks the %s %s body of %s", profile, reason, f)
		}
	}
}

// shBlock is one fenced sh block of a Markdown file.
type shBlock struct {
	line   int    // where it starts
	code   string // its commands
	notRun string // the reason in a preceding <!-- not run: reason --> line; "" runs it
}

// shBlocks returns the fenced sh blocks of a Markdown file, within the section headed
// section when it is not "".
func shBlocks(t *testing.T, file, section string) []shBlock {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks  []shBlock
		cur     *shBlock
		notRun  string
		inside  = section == ""
		lines   = strings.Split(string(raw), "\n")
		inFence bool
	)
	for i, l := range lines {
		switch {
		case cur != nil:
			if l == "```" {
				blocks = append(blocks, *cur)
				cur = nil
				continue
			}
			cur.code += l + "\n"
		case strings.HasPrefix(l, "```"):
			inFence = !inFence
			if inFence && l == "```sh" && inside {
				cur = &shBlock{line: i + 1, notRun: notRun}
				inFence = false
			}
			notRun = ""
		case strings.HasPrefix(l, "<!-- not run:"):
			notRun = strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(l, "<!-- not run:"), "-->"))
		case strings.HasPrefix(l, "#") && section != "" && !inFence:
			inside = strings.TrimLeft(l, "# ") == section
		}
	}
	return blocks
}

// sandboxPaths moves the system paths documented commands write into root.
func sandboxPaths(root string) *strings.Replacer {
	return strings.NewReplacer("/etc/keygate", root+"/etc/keygate", "/etc/envoy", root+"/etc/envoy",
		"/var/log/keygate", root+"/var/log/keygate", "/tmp/", root+"/tmp/")
}

// unlabeledCommands returns the lines of fenced blocks without a language that hold
// shell commands (a line starting with one of a few command words): such a block must
// be an sh block, run or marked not run.
func unlabeledCommands(raw string) []int {
	var (
		out   []int
		start = -1 // the opening line of an unlabeled fence
		fence bool
	)
	for i, l := range strings.Split(raw, "\n") {
		switch {
		case strings.HasPrefix(l, "```"):
			if !fence && l == "```" {
				start = i + 1
			} else {
				start = -1
			}
			fence = !fence
		case start > 0:
			for _, w := range []string{"keygate ", "curl ", "make ", "go ", "vault ", "bin/keygate "} {
				if strings.HasPrefix(l, w) {
					out = append(out, start)
					start = -1
					break
				}
			}
		}
	}
	return out
}

// TestDocsCommands runs every sh block of README.md (runReadmeBlocks) and of docs/ (in
// the order docs/README.md gives) against a fresh Vault dev server, with keygate and
// vault on PATH and /etc/keygate, /etc/envoy, /var/log/keygate and /tmp moved into a
// temporary root. Blocks marked <!-- not run: reason --> are skipped; so are the README
// quick start's, which the demo test (TestDevDemo) and CI (make test) run.
func TestDocsCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Vault dev server and runs the documented commands")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	quick := shBlocks(t, filepath.Join(root, "README.md"), "Quick start")
	if len(quick) == 0 {
		t.Errorf("README.md: no sh block in the Quick start section")
	}
	for _, b := range quick {
		if b.notRun == "" {
			t.Errorf("README.md:%d: a quick start block is neither run here nor marked <!-- not run: reason -->", b.line)
		}
	}
	sandbox := t.TempDir()
	bin := filepath.Join(sandbox, "bin")
	// Built as make dev and make image build it, so the three share Go's build cache.
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(bin, "keygate"), ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	vaultBin, err := vaulttest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vaultBin, filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	v, err := vaulttest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Stop)
	env := append(os.Environ(), v.Env()...)
	env = append(env, "PATH="+bin+":"+os.Getenv("PATH"))
	for _, d := range []string{"etc", "var/log/keygate", "tmp"} {
		if err := os.MkdirAll(filepath.Join(sandbox, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sandboxed := sandboxPaths(sandbox)
	for _, f := range append([]string{filepath.Join(root, "README.md")}, mustGlob(t, filepath.Join(root, "docs", "*.md"))...) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range unlabeledCommands(string(raw)) {
			t.Errorf("%s:%d: a fenced block of shell commands without sh: label it ```sh, run or <!-- not run: reason -->", f, line)
		}
	}
	// The README first, on the dev server's own KV mount, with its own sandbox.
	t.Run("README", func(t *testing.T) { runReadmeBlocks(t, root, v, env) })
	// A production Vault starts without the dev server's KV mount: vault.md enables it.
	disable := exec.Command(vaultBin, "secrets", "disable", "secret")
	disable.Env = env
	if out, err := disable.CombinedOutput(); err != nil {
		t.Fatalf("vault secrets disable secret: %v\n%s", err, out)
	}

	ran := 0
	for _, page := range []string{"vault.md", "envoy.md", "airgapped.md", "rotation.md", "troubleshooting.md"} {
		// One shell per page, so a page's blocks share variables, like a reader's terminal.
		script := "set -euo pipefail\n"
		for _, b := range shBlocks(t, filepath.Join(root, "docs", page), "") {
			if b.notRun != "" {
				continue
			}
			script += "echo '>>> docs/" + page + ":" + itoa(b.line) + "' >&2\n" + sandboxed.Replace(b.code)
			ran++
		}
		cmd := exec.Command("bash", "-c", script)
		cmd.Dir, cmd.Env = root, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docs/%s: %v\n%s", page, err, out)
		}
	}
	for _, f := range mustGlob(t, filepath.Join(root, "docs", "*.md")) {
		for _, b := range shBlocks(t, f, "") {
			if b.notRun == "" && !strings.Contains("vault.md envoy.md airgapped.md rotation.md troubleshooting.md", filepath.Base(f)) {
				t.Errorf("%s:%d: an sh block in a page the test does not run", f, b.line)
			}
		}
	}
	if ran < 10 {
		t.Errorf("ran %d blocks; the docs have more", ran)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil || len(files) == 0 {
		t.Fatalf("%s: %v %v", pattern, files, err)
	}
	return files
}

// README blocks stand for commands a reader adapts; the test makes them concrete with
// these rules, and only these:
//
//   - key_XXXXXXXXXXXXXXXX is a key the test creates for that block alone (owner acct_1,
//     scopes chat:completions,models:read);
//   - $ADMIN_KEY is in the environment: a key with the admin scope;
//   - 127.0.0.1:9003 is the admin API of a keygate serve the test runs (usage.store
//     sqlite), and 0.0.0.0:8443 a free loopback port;
//   - an optional [--flag VALUE] is used without its brackets, or left out when VALUE is a
//     placeholder (T, or holding … or |);
//   - curl -s is curl -sSf, so an HTTP error fails the block;
//   - /etc/keygate, /etc/envoy, /var/log/keygate and /tmp/ move into a temporary root
//     (sandboxPaths), and the blocks run in a temporary directory holding keygate.yaml
//     (readmeConfig);
//   - a block that is one keygate serve line runs in the background until its listener
//     answers a request: the terminator's refuses a certified client without a key (401).
//
// Each block that runs must exit 0 and print the word readmeExpect gives it.
var (
	readmeKeyID     = regexp.MustCompile(`key_XXXXXXXXXXXXXXXX`)
	readmeKey       = regexp.MustCompile(`mgx-sk-[0-9A-Za-z]{32}`)
	readmeOptional  = regexp.MustCompile(`\[(--[a-z-]+)( [^\[\]]*)?\]`)
	readmePlacehold = regexp.MustCompile(`…|\||^ [A-Z]$`)
	readmeExpect    = map[string]string{ // a line of the block → a word its output holds
		`keygate keys create --name "Production App"`:           `"status":"revoked"`,
		`curl -s -H "Authorization: Bearer $ADMIN_KEY" -X POST`: `"Staging Server"`,
		`keygate certs init-ca --dir /etc/keygate/ca`:           `spiffe://example.org/ns/prod/sa/billing`,
		`/usage?from=2026-11-24T10:00:00Z`:                      `"step":"minute"`,
	}
)

// readmeConfig is the keygate.yaml README blocks name (keys usage --config, serve
// --config): a usage store, and the terminator's TLS from the PKI block's files.
const readmeConfig = `grpc_addr: %s
http_addr: %s
admin_addr: ""
shutdown_delay: 0s
usage: {store: sqlite, sqlite_path: %s}
terminate:
  tls: {cert_file: keygate.pem, key_file: keygate-key.pem, client_ca_file: %s/etc/keygate/ca/ca.pem}
`

// readmeCommands applies the rules above, but for the key ids, to a README block.
func readmeCommands(code string, sandboxed *strings.Replacer, adminAddr, termAddr string) string {
	code = readmeOptional.ReplaceAllStringFunc(code, func(g string) string {
		m := readmeOptional.FindStringSubmatch(g)
		if readmePlacehold.MatchString(m[2]) {
			return ""
		}
		return m[1] + m[2]
	})
	return strings.NewReplacer("127.0.0.1:9003", adminAddr, "0.0.0.0:8443", termAddr, "curl -s ", "curl -sSf ").
		Replace(sandboxed.Replace(code))
}

// runReadmeBlocks runs README.md's sh blocks, each in its own shell, with a keygate
// serve (admin API on) beside them.
func runReadmeBlocks(t *testing.T, root string, v *vaulttest.Server, env []string) {
	sandbox, work := t.TempDir(), t.TempDir()
	for _, d := range []string{"etc", "var/log/keygate", "tmp"} {
		if err := os.MkdirAll(filepath.Join(sandbox, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("VAULT_ADDR", v.Addr)
	t.Setenv("VAULT_TOKEN", v.Token)
	db := filepath.Join(work, "keygate-usage.db")
	adminAddr := freeAddr(t)
	startServe(t, "--config", writeConfig(t, "usage: {store: sqlite, sqlite_path: "+db+", flush: 1s}\n"), "--admin-addr", adminAddr)
	if err := os.WriteFile(filepath.Join(work, "keygate.yaml"),
		fmt.Appendf(nil, readmeConfig, freeAddr(t), freeAddr(t), db, sandbox), 0o600); err != nil {
		t.Fatal(err)
	}
	newKey := func(name, scopes string) createdKey {
		out, stderr, err := cli(t, "keys", "create", "--name", name, "--owner", "acct_1", "--scopes", scopes, "--json")
		if err != nil {
			t.Fatalf("keys create: %v\n%s", err, stderr)
		}
		var k createdKey
		if err := json.Unmarshal([]byte(out), &k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	env = append(env, "ADMIN_KEY="+newKey("docs admin", "admin").Key)

	ran := 0
	for _, b := range shBlocks(t, filepath.Join(root, "README.md"), "") {
		if b.notRun != "" {
			continue
		}
		ran++
		where := fmt.Sprintf("README.md:%d", b.line)
		termAddr := freeAddr(t)
		code := readmeCommands(b.code, sandboxPaths(sandbox), adminAddr, termAddr)
		if readmeKeyID.MatchString(code) {
			code = readmeKeyID.ReplaceAllString(code, newKey(fmt.Sprintf("docs block %d", b.line), "chat:completions,models:read").ID)
		}
		if strings.HasPrefix(code, "keygate serve ") && strings.Count(strings.TrimSpace(code), "\n") == 0 {
			runReadmeServe(t, where, code, work, sandbox, termAddr, env)
			continue
		}
		expect := ""
		for line, word := range readmeExpect {
			if strings.Contains(b.code, line) {
				expect = word
			}
		}
		if expect == "" {
			t.Errorf("%s: no expected output: add a line of the block and a word it prints to readmeExpect", where)
		}
		cmd := exec.Command("bash", "-c", "set -euo pipefail\n"+code)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		out = readmeKey.ReplaceAll(out, []byte("mgx-sk-…")) // keys created here stay out of the test's log
		if err != nil {
			t.Errorf("%s: %v\n%s\n%s", where, err, code, out)
		} else if !strings.Contains(string(out), expect) {
			t.Errorf("%s: the output lacks %s\n%s\n%s", where, expect, code, out)
		}
	}
	if ran < 5 {
		t.Errorf("ran %d README blocks; it has more", ran)
	}
}

// runReadmeServe runs a README keygate serve line until its terminator answers a
// certified client without a key with a 401, then stops it.
func runReadmeServe(t *testing.T, where, code, work, sandbox, termAddr string, env []string) {
	var logs safebuf.Buffer
	cmd := exec.Command("bash", "-c", "exec "+code)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = work, env, &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-done
	}()
	// The client certificate and the CA are the PKI block's (README's "A private PKI").
	ca, err := os.ReadFile(filepath.Join(sandbox, "etc/keygate/ca/ca.pem"))
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	cert, err := tls.LoadX509KeyPair(filepath.Join(work, "billing.pem"), filepath.Join(work, "billing-key.pem"))
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "keygate.internal"}}}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get("https://" + termAddr + "/v1/models")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: a request without a key got %d, want 401", where, resp.StatusCode)
			}
			return
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("%s: %v\n%s\n%s", where, err, code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the terminator does not answer: %v\n%s", where, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

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

// TestDocsCommands runs every sh block of docs/ (in the order docs/README.md gives)
// against a fresh Vault dev server, with keygate and vault on PATH and /etc/keygate,
// /etc/envoy, /var/log/keygate and /tmp moved into a temporary root. Blocks marked
// <!-- not run: reason --> are skipped; so are the README quick start's, which the demo
// test (TestDevDemo) and CI (make test) run.
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
	sandboxed := strings.NewReplacer("/etc/keygate", sandbox+"/etc/keygate", "/etc/envoy", sandbox+"/etc/envoy",
		"/var/log/keygate", sandbox+"/var/log/keygate", "/tmp/", sandbox+"/tmp/")
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
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, f := range files {
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

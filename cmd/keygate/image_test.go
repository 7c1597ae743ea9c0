package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestImage builds the container image as make image does (scripts/image.sh, buildah, an
// OCI archive) and runs it with podman: keygate version, then keygate serve answering
// Checks against the test's Vault on loopback. Where podman cannot run containers, the
// test says why and skips only the running part.
func TestImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the container image")
	}
	for _, tool := range []string{"bash", "buildah", "podman"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the image test needs %s (Debian: apt-get install buildah podman runc; .ci/run installs them)", tool)
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const version = "v0.0.0-image-test"
	archive := filepath.Join(dir, "keygate.oci.tar")
	build := exec.Command("bash", "scripts/image.sh")
	build.Dir, build.Env = root, append(os.Environ(), "VERSION="+version, "OUT="+archive)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}

	// podman with Debian's runc and no default ulimits: crun cannot set RLIMIT_NOFILE in
	// the containers these tests run in.
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	podman := func(args ...string) (string, error) {
		cmd := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...)
		cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+conf)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := podman("load", "-q", "-i", archive); err != nil {
		t.Skipf("podman cannot load images on this machine, so the image is built but not run: %v\n%s", err, out)
	}
	image := "localhost/keygate:" + version
	t.Cleanup(func() { _, _ = podman("rmi", "-f", image) })

	out, err := podman("run", "--rm", "--network=host", image, "version")
	if err != nil {
		t.Skipf("podman cannot run containers on this machine, so the image is built but not run: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) != "keygate "+version {
		t.Errorf("keygate version in the image: %q, want %q", out, "keygate "+version)
	}
	if out, err := podman("run", "--rm", "--network=host", image, "--version"); err != nil || strings.TrimSpace(out) != "keygate "+version {
		t.Errorf("keygate --version in the image: %q, %v", out, err)
	}
	if out, err := podman("image", "inspect", "--format", "{{.Config.User}}", image); err != nil || strings.TrimSpace(out) != "65534:65534" {
		t.Errorf("image user: %q, %v; want 65534:65534 (not root)", out, err)
	}

	// keygate serve in the container, against the test's Vault on loopback. The token
	// reaches it through the environment (-e NAME copies it), never the command line.
	base := useVault(t)
	key := createKey(t, vault(t), base, "models:read")
	cfg := filepath.Join(dir, "keygate.yaml")
	if err := os.WriteFile(cfg, []byte("vault: {path: "+base+"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	grpcAddr, httpAddr := freeAddr(t), freeAddr(t)
	name := fmt.Sprintf("keygate-image-test-%d", os.Getpid())
	out, err = podman("run", "-d", "--name", name, "--network=host", "-e", "VAULT_ADDR", "-e", "VAULT_TOKEN",
		"-v", cfg+":/etc/keygate/keygate.yaml:ro", image,
		"serve", "--config", "/etc/keygate/keygate.yaml", "--grpc-addr", grpcAddr, "--http-addr", httpAddr, "--admin-addr", "")
	if err != nil {
		t.Fatalf("podman run serve: %v\n%s", err, out)
	}
	t.Cleanup(func() { _, _ = podman("rm", "-f", "-t", "2", name) })
	waitUntilOK(t, func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			if state, _ := podman("inspect", "--format", "{{.State.Status}}", name); strings.TrimSpace(state) == "exited" {
				logs, _ := podman("logs", name)
				t.Fatalf("keygate serve in the container exited:\n%s", logs)
			}
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	if err := run(ctx, []string{"check", "--addr", grpcAddr, "-H", "Authorization: Bearer " + key.Key}, &stdout, &stderr); err != nil {
		t.Errorf("check with a valid key against the container: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	stdout.Reset()
	if err := run(ctx, []string{"check", "--addr", grpcAddr}, &stdout, &stderr); err == nil || !strings.Contains(stdout.String(), "AUTH_MISSING") {
		t.Errorf("check without a key against the container: %v\n%s", err, stdout.String())
	}
	if out, err := podman("stop", "-t", "5", name); err != nil {
		t.Errorf("podman stop: %v\n%s", err, out)
	}
	if code, _ := podman("inspect", "--format", "{{.State.ExitCode}}", name); strings.TrimSpace(code) != "0" {
		logs, _ := podman("logs", name)
		t.Errorf("keygate serve exited with %s on SIGTERM, want 0:\n%s", code, logs)
	}
}

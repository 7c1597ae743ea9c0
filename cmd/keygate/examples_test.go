package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// sitePKICommands are the keygate certs commands of docs/airgapped.md and docs/envoy.md
// that write the certificates the example configs name under /etc/keygate/tls/.
var sitePKICommands = [][]string{
	{"certs", "init-ca", "--dir", "/etc/keygate/ca", "--name", "Site CA"},
	{"certs", "issue", "--ca-dir", "/etc/keygate/ca", "--server", "--cn", "keygate", "--dns", "keygate.internal,localhost,127.0.0.1", "--out", "/etc/keygate/tls/keygate"},
	{"certs", "issue", "--ca-dir", "/etc/keygate/ca", "--client", "--cn", "keygate", "--spiffe-id", "spiffe://site.internal/ns/keygate/sa/serve", "--out", "/etc/keygate/tls/keygate-vault"},
}

// siteProvided are files the examples name that no keygate command writes: the site's
// Vault CA, the AppRole credentials and the Redis password (docs/vault.md).
var siteProvided = map[string]bool{
	"/etc/keygate/vault-ca.pem":          true,
	"/etc/keygate/approle/role_id":       true,
	"/etc/keygate/approle/secret_id":     true,
	"/etc/keygate/redis-password":        true,
	"/var/run/keygate/role_id":           true,
	"/var/run/keygate/secret_id":         true,
	"/var/log/keygate/audit.log":         true,
	"/etc/keygate/tls/keygate-vault.pem": false, // written by sitePKICommands
}

// exampleConfigs returns every shipped keygate config: examples/*.yaml and the
// Kubernetes ConfigMap's keygate.yaml.
func exampleConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("examples: %v %v", files, err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimPrefix(f, "../../")] = raw
	}
	raw, err := os.ReadFile("../../deploy/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil || cm.Data["keygate.yaml"] == "" {
		t.Fatalf("deploy/kubernetes/configmap.yaml: no keygate.yaml (%v)", err)
	}
	out["deploy/kubernetes/configmap.yaml"] = []byte(cm.Data["keygate.yaml"])
	return out
}

// configFiles lists every file a config names.
func configFiles(cfg *config) map[string]string {
	files := map[string]string{}
	add := func(field, path string) {
		if path != "" {
			files[field] = path
		}
	}
	for name, l := range map[string]*listenerTLS{"tls.grpc": cfg.TLS.GRPC, "tls.http": cfg.TLS.HTTP, "tls.admin": cfg.TLS.Admin, "terminate.tls": cfg.Terminate.TLS} {
		if l != nil {
			add(name+".cert_file", l.CertFile)
			add(name+".key_file", l.KeyFile)
			add(name+".client_ca_file", l.ClientCAFile)
			add(name+".crl_file", l.CRLFile)
		}
	}
	add("client_certs.ca_file", cfg.ClientCerts.CAFile)
	add("client_certs.crl_file", cfg.ClientCerts.CRLFile)
	add("vault.token_file", cfg.Vault.TokenFile)
	add("vault.auth.role_id_file", cfg.Vault.Auth.RoleIDFile)
	add("vault.auth.secret_id_file", cfg.Vault.Auth.SecretIDFile)
	add("vault.tls.ca_cert", cfg.Vault.TLS.CACert)
	add("vault.tls.client_cert", cfg.Vault.TLS.ClientCert)
	add("vault.tls.client_key", cfg.Vault.TLS.ClientKey)
	add("rate_limits.redis.password_file", cfg.RateLimits.Redis.PasswordFile)
	add("audit_log", strings.TrimPrefix(cfg.AuditLog, "stdout"))
	return files
}

// TestExampleConfigs decodes every shipped config strictly into keygate's config, then,
// with /etc/keygate, /var/run/keygate and /var/log/keygate moved into a temporary root
// where the documented keygate certs commands have run and the site-provided files
// exist, runs keygate config validate on each: every value is valid and every file it
// names is the file the docs make.
func TestExampleConfigs(t *testing.T) {
	root := t.TempDir()
	sandboxed := strings.NewReplacer("/etc/keygate/", root+"/etc/keygate/", "/var/run/keygate/", root+"/var/run/keygate/",
		"/var/log/keygate/", root+"/var/log/keygate/")
	for _, args := range sitePKICommands {
		args = append([]string(nil), args...)
		for i, a := range args {
			args[i] = strings.ReplaceAll(a, "/etc/keygate", root+"/etc/keygate")
		}
		if err := os.MkdirAll(root+"/etc/keygate/tls", 0o700); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := cli(t, args...); err != nil {
			t.Fatalf("keygate %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
	}
	// docs: install -m 0644 /etc/keygate/ca/ca.pem /etc/keygate/ca/crl.pem /etc/keygate/tls/
	ca, err := os.ReadFile(filepath.Join(root, "etc/keygate/ca/ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := os.ReadFile(filepath.Join(root, "etc/keygate/ca/crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	site := map[string][]byte{"/etc/keygate/tls/ca.pem": ca, "/etc/keygate/tls/crl.pem": crl}
	// What the site provides: Vault's CA (here the site CA), the AppRole files
	// (docs/vault.md) and the Redis password; the audit log's directory.
	for path, provided := range siteProvided {
		switch {
		case !provided:
		case strings.HasSuffix(path, ".pem"):
			site[path] = ca
		case strings.HasSuffix(path, ".log"):
			if err := os.MkdirAll(filepath.Dir(root+path), 0o700); err != nil {
				t.Fatal(err)
			}
		default:
			site[path] = []byte("site-provided\n")
		}
	}
	for path, b := range site {
		if err := os.MkdirAll(filepath.Dir(root+path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	for name, raw := range exampleConfigs(t) {
		t.Run(name, func(t *testing.T) {
			cfg, err := parseConfig(raw)
			if err != nil {
				t.Fatalf("%s does not decode strictly: %v", name, err)
			}
			for field, path := range configFiles(&cfg) {
				if !filepath.IsAbs(path) {
					t.Errorf("%s: %s is %q, want an absolute path", name, field, path)
				}
				if _, ok := siteProvided[path]; !ok && !strings.HasPrefix(path, "/etc/keygate/tls/") {
					t.Errorf("%s: %s names %s, which neither the documented keygate certs commands nor the site provide", name, field, path)
				}
			}
			f := filepath.Join(t.TempDir(), "keygate.yaml")
			if err := os.WriteFile(f, []byte(sandboxed.Replace(string(raw))), 0o600); err != nil {
				t.Fatal(err)
			}
			out, stderr, err := cli(t, "config", "validate", "--config", f)
			if err != nil || !strings.Contains(out, "configuration OK") {
				t.Errorf("keygate config validate --config %s: %v\n%s%s", name, err, out, stderr)
			}
		})
	}
}

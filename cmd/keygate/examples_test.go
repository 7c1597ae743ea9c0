package main

import (
	"bytes"
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
// with /etc/keygate moved into a temporary root where the documented keygate certs
// commands have run, loads each TLS listener, the client-certificate verifier and the
// rate limiter from it: the files the examples name are the files the docs make.
//
// When `keygate config validate --config FILE` exists, it is the check to run here, on
// each rewritten file, in place of the loading below.
func TestExampleConfigs(t *testing.T) {
	root := t.TempDir()
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
	for _, f := range []string{"ca.pem", "crl.pem"} {
		b, err := os.ReadFile(filepath.Join(root, "etc/keygate/ca", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "etc/keygate/tls", f), b, 0o644); err != nil {
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
				if !siteProvided[path] {
					if _, err := os.Stat(root + path); err != nil {
						t.Errorf("%s: %s names %s, which the documented keygate certs commands do not write", name, field, path)
					}
				}
			}
			sandboxed, err := parseConfig(bytes.ReplaceAll(raw, []byte("/etc/keygate/tls/"), []byte(root+"/etc/keygate/tls/")))
			if err != nil {
				t.Fatal(err)
			}
			for lname, l := range map[string]*listenerTLS{"tls.grpc": sandboxed.TLS.GRPC, "tls.http": sandboxed.TLS.HTTP,
				"tls.admin": sandboxed.TLS.Admin, "terminate.tls": sandboxed.Terminate.TLS} {
				if l == nil {
					continue
				}
				if _, err := l.reloader(); err != nil {
					t.Errorf("%s: %s: %v", name, lname, err)
				}
			}
			if _, err := sandboxed.clientCerts(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if _, err := sandboxed.format(); err != nil {
				t.Errorf("%s: key_prefix: %v", name, err)
			}
			if _, err := sandboxed.logLevel(); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			if sandboxed.RateLimits.Backend == "local" {
				if _, _, _, err := sandboxed.limiter(); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		})
	}
}

package vaultstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/internal/certtest"
	"github.com/keygate/keygate/internal/vaulttest"
)

// readerPolicy lets a token read every record under base.
func readerPolicy(t *testing.T, root *api.Client, base string) string {
	t.Helper()
	name := strings.ReplaceAll(base, "/", "-") + "-reader"
	if err := root.Sys().PutPolicy(name, `path "secret/data/`+base+`/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	return name
}

func enableAuth(t *testing.T, root *api.Client, path, typ string) {
	t.Helper()
	if err := root.Sys().EnableAuthWithOptions(path, &api.EnableAuthOptions{Type: typ}); err != nil {
		t.Fatal(err)
	}
}

// storedKey creates a key under base with the root token and returns it.
func storedKey(t *testing.T, root *api.Client, base string) string {
	t.Helper()
	s, err := New(Config{Client: root, Path: base})
	if err != nil {
		t.Fatal(err)
	}
	key, rec := issue(t, authz.KeySpec{Name: "auth test"})
	if err := s.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	return key
}

func canLookup(t *testing.T, c *api.Client, base, key string) error {
	t.Helper()
	s, err := New(Config{Client: c, Path: base})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lookup(context.Background(), authz.HashKey(key))
	return err
}

func unauthenticated(t *testing.T) *api.Client {
	t.Helper()
	c := vault(t).Client(t, nil)
	c.ClearToken()
	return c
}

func TestAppRoleLoginAndRelogin(t *testing.T) {
	root := vault(t).Client(t, nil)
	base := vaulttest.UniquePath(t)
	key := storedKey(t, root, base)
	mount := "approle-" + strings.ReplaceAll(base[len("keygate-test/"):], "/", "-")
	enableAuth(t, root, mount, "approle")
	// Short token lifetimes force renewals and, at the max TTL, a new login.
	if _, err := root.Logical().Write("auth/"+mount+"/role/keygate", map[string]any{
		"token_policies": readerPolicy(t, root, base), "token_ttl": "2s", "token_max_ttl": "4s",
	}); err != nil {
		t.Fatal(err)
	}
	rid, err := root.Logical().Read("auth/" + mount + "/role/keygate/role-id")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := root.Logical().Write("auth/"+mount+"/role/keygate/secret-id", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	roleFile, secretFile := filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
	for f, v := range map[string]string{roleFile: rid.Data["role_id"].(string) + "\n", secretFile: sid.Data["secret_id"].(string)} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	c := unauthenticated(t)
	a, err := NewAuthenticator(c, AuthConfig{Method: AuthAppRole, Mount: mount, RoleIDFile: roleFile, SecretIDFile: secretFile})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	first := c.Token()
	if err := canLookup(t, c, base, key); err != nil {
		t.Fatalf("lookup after the AppRole login: %v", err)
	}
	// Wait until the first token is dead (its max TTL is 4s): by then the Authenticator
	// must have logged in again, and the client must work with the new token.
	old := vault(t).Client(t, nil)
	old.SetToken(first)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := old.Auth().Token().LookupSelf(); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first token outlived its max TTL")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The watcher gives up near the end of the max TTL; the new login follows.
	for a.Logins() < 2 || c.Token() == first || canLookup(t, c, base, key) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no working new login after the token's max TTL (logins: %d)", a.Logins())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestTokenRenewal(t *testing.T) {
	root := vault(t).Client(t, nil)
	base := vaulttest.UniquePath(t)
	key := storedKey(t, root, base)
	sec, err := root.Auth().Token().Create(&api.TokenCreateRequest{
		Policies: []string{readerPolicy(t, root, base)}, TTL: "2s",
	})
	if err != nil {
		t.Fatal(err)
	}
	c := unauthenticated(t)
	c.SetToken(sec.Auth.ClientToken)
	a, err := NewAuthenticator(c, AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // twice the token's TTL: alive only if renewed
	if err := canLookup(t, c, base, key); err != nil {
		t.Fatalf("lookup after twice the TTL: %v", err)
	}
}

func TestCertLogin(t *testing.T) {
	v, err := vaulttest.StartTLS()
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	root := v.Client(t, nil)
	base := vaulttest.UniquePath(t)
	key := storedKey(t, root, base)
	ca := certtest.NewCA(t, "keygate-clients")
	enableAuth(t, root, "cert", "cert")
	if _, err := root.Logical().Write("auth/cert/certs/keygate", map[string]any{
		"certificate": string(ca.CertPEM), "token_policies": readerPolicy(t, root, base), "token_ttl": "1h",
	}); err != nil {
		t.Fatal(err)
	}
	client := func(leaf *certtest.Leaf) *api.Client {
		cfg := api.DefaultConfig()
		cfg.Address = v.Addr
		tc := &api.TLSConfig{CACert: v.CACert}
		if leaf != nil {
			tc.ClientCert, tc.ClientKey = leaf.CertFile, leaf.KeyFile
		}
		if err := cfg.ConfigureTLS(tc); err != nil {
			t.Fatal(err)
		}
		c, err := api.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		c.ClearToken()
		return c
	}

	c := client(ca.Issue(t, certtest.LeafOptions{CommonName: "keygate-serve"}))
	a, err := NewAuthenticator(c, AuthConfig{Method: AuthCert, CertRole: "keygate"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := canLookup(t, c, base, key); err != nil {
		t.Fatalf("lookup after cert login: %v", err)
	}

	// A certificate from another CA is refused.
	stranger := certtest.NewCA(t, "strangers").Issue(t, certtest.LeafOptions{CommonName: "intruder"})
	a2, _ := NewAuthenticator(client(stranger), AuthConfig{Method: AuthCert})
	if err := a2.Start(ctx); !errors.Is(err, ErrAuth) {
		t.Fatalf("login with a foreign certificate: %v", err)
	}
}

func TestAuthConfigErrors(t *testing.T) {
	c := unauthenticated(t)
	for name, cfg := range map[string]AuthConfig{
		"unknown method":     {Method: "kerberos"},
		"approle, no files":  {Method: AuthAppRole},
		"approle, bad mount": {Method: AuthAppRole, Mount: "../x", RoleIDFile: "a", SecretIDFile: "b"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewAuthenticator(c, cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	a, err := NewAuthenticator(c, AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(context.Background()); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "VAULT_TOKEN") {
		t.Fatalf("token login without a token: %v", err)
	}
	a, _ = NewAuthenticator(c, AuthConfig{Method: AuthAppRole, RoleIDFile: "/nonexistent/role", SecretIDFile: "/nonexistent/secret"})
	if _, err := a.Login(context.Background()); !errors.Is(err, ErrAuth) {
		t.Fatalf("approle login without files: %v", err)
	}
}

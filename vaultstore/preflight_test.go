package vaultstore

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/api"
)

// TestPreflight: each misconfiguration a new user meets is named, with its fix, against
// a real Vault; a token holding only the shipped serve.hcl passes serve's probe.
func TestPreflight(t *testing.T) {
	base := "keygate-test/preflight-" + strings.ToLower(t.Name())
	root := vault(t).Client(t, nil)
	v1 := "kv1-" + strings.ToLower(t.Name())
	if err := root.Sys().Mount(v1, &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	bogus := vault(t).Client(t, nil)
	bogus.SetToken("hvs.not-a-token")
	unrelated := vault(t).Client(t, nil)
	sec, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"default"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	unrelated.SetToken(sec.Auth.ClientToken)
	https := vault(t).Client(t, nil)
	if err := https.SetAddress(strings.Replace(vault(t).Addr, "http://", "https://", 1)); err != nil {
		t.Fatal(err)
	}
	serveOnly := tokenWithPolicy(t, "policies/serve.hcl", base)
	for name, tc := range []struct {
		name string
		cfg  PreflightConfig
		is   error
		want []string
	}{
		{name: "root", cfg: PreflightConfig{Client: root, Path: base, Keys: true}},
		{name: "serve.hcl for serve", cfg: PreflightConfig{Client: serveOnly, Path: base}},
		{name: "serve.hcl for keys", cfg: PreflightConfig{Client: serveOnly, Path: base, Keys: true}, is: ErrMisconfigured,
			want: []string{"metadata/" + base + "/ids", "vaultstore/policies/keys.hcl"}},
		{name: "wrong mount", cfg: PreflightConfig{Client: root, Mount: "nosuchmount", Path: base}, is: ErrMisconfigured,
			want: []string{"no secrets engine is mounted at nosuchmount/", "vault secrets enable -path=nosuchmount kv-v2"}},
		{name: "kv v1", cfg: PreflightConfig{Client: root, Mount: v1, Path: base}, is: ErrMisconfigured,
			want: []string{"KV version 1", "keygate needs KV v2", "vault kv enable-versioning " + v1}},
		{name: "wrong token", cfg: PreflightConfig{Client: bogus, Path: base}, is: ErrMisconfigured,
			want: []string{"VAULT_TOKEN rejected (403)"}},
		{name: "no policy", cfg: PreflightConfig{Client: unrelated, Path: base}, is: ErrMisconfigured,
			want: []string{"do not allow secret/data/" + base + "/changes (403)", "vaultstore/policies/serve.hcl"}},
		{name: "VAULT_ADDR unset", cfg: PreflightConfig{Client: https, Path: base}, is: ErrMisconfigured,
			want: []string{"VAULT_ADDR is not set", "plain HTTP, not HTTPS", "set VAULT_ADDR"}},
	} {
		_ = name
		t.Run(tc.name, func(t *testing.T) {
			err := Preflight(context.Background(), tc.cfg)
			if tc.is == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

package vaultstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// ErrMisconfigured means Vault answered, but keygate cannot work with it as configured:
// the token is rejected, the mount is missing or not KV v2, or the token's policy does
// not reach keygate's path. Retrying does not help; the message says what to change.
var ErrMisconfigured = errors.New("vault misconfigured")

// PreflightConfig says what to probe.
type PreflightConfig struct {
	Client      *api.Client
	Mount, Path string // "" means "secret" and "keygate", as in Config
	// Keys also probes what the keys commands need (listing ids), not only what serve
	// needs (reading records and the change feed).
	Keys bool
	// AddrSource says where the client's address came from, for messages: "VAULT_ADDR",
	// "vault.address", or "" when neither was set (the client's default applies).
	AddrSource string
}

// Preflight checks, with the probes the shipped least-privilege policies allow, that the
// token is accepted, the mount exists and is KV v2, and the token may read keygate's
// change feed (and, with Keys, list its ids). An unreachable Vault is ErrVaultUnavailable;
// anything the operator must fix is ErrMisconfigured, with the fix in the message.
func Preflight(ctx context.Context, cfg PreflightConfig) error {
	mount, base := cmpOr(cfg.Mount, "secret"), cmpOr(cfg.Path, "keygate")
	c := cfg.Client
	addr := c.Address()
	feed := mount + "/data/" + base + "/changes"
	status, msg, err := rawStatus(ctx, c, http.MethodGet, feed)
	if err != nil {
		return unreachable(addr, cfg.AddrSource, err)
	}
	switch {
	case status == http.StatusForbidden:
		return denied(ctx, c, mount, base, feed, "serve.hcl")
	case status == http.StatusNotFound && strings.Contains(msg, "no handler for route"):
		return fmt.Errorf("%w: no secrets engine is mounted at %s/ on %s: enable KV v2 there (vault secrets enable -path=%s kv-v2) or set vault.mount / --vault-mount to the mount keygate's keys are in",
			ErrMisconfigured, mount, addr, mount)
	case status != http.StatusOK && status != http.StatusNotFound:
		return fmt.Errorf("%w: reading %s answered %d: %s", ErrVaultUnavailable, feed, status, msg)
	}
	// A KV v1 mount answers a /data/ path like any missing secret; the mount's options
	// tell. Any token with a capability under the mount may read them.
	if v, ok := kvVersion(ctx, c, mount+"/"+base); ok && v != "2" {
		return fmt.Errorf("%w: %s/ on %s is KV version %s; keygate needs KV v2: upgrade it (vault kv enable-versioning %s/) or mount a new one (vault secrets enable -path=NAME kv-v2) and set vault.mount",
			ErrMisconfigured, mount, addr, cmpOr(v, "1"), mount)
	}
	if cfg.Keys {
		ids := mount + "/metadata/" + base + "/ids"
		status, msg, err := rawStatus(ctx, c, "LIST", ids)
		if err != nil {
			return unreachable(addr, cfg.AddrSource, err)
		}
		switch status {
		case http.StatusOK, http.StatusNotFound:
		case http.StatusForbidden:
			return denied(ctx, c, mount, base, ids, "keys.hcl")
		default:
			return fmt.Errorf("%w: listing %s answered %d: %s", ErrVaultUnavailable, ids, status, msg)
		}
	}
	return nil
}

// rawStatus makes one request and returns the status and Vault's error text.
func rawStatus(ctx context.Context, c *api.Client, method, path string) (int, string, error) {
	r := c.NewRequest(method, "/v1/"+path)
	resp, err := c.RawRequestWithContext(ctx, r)
	if resp == nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e struct {
		Errors []string `json:"errors"`
	}
	_ = json.Unmarshal(body, &e)
	return resp.StatusCode, strings.Join(e.Errors, "; "), nil
}

// kvVersion reads a mount's KV version from sys/internal/ui/mounts, which answers any
// token that holds a capability under the path. ok is false when it cannot tell.
func kvVersion(ctx context.Context, c *api.Client, path string) (string, bool) {
	sec, err := c.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+path)
	if err != nil || sec == nil {
		return "", false
	}
	if t, _ := sec.Data["type"].(string); t != "kv" {
		return "", false
	}
	opts, _ := sec.Data["options"].(map[string]any)
	v, _ := opts["version"].(string)
	return v, true
}

// denied tells a rejected token from one whose policy does not reach the path.
func denied(ctx context.Context, c *api.Client, mount, base, path, policy string) error {
	status, msg, err := rawStatus(ctx, c, http.MethodGet, "auth/token/lookup-self")
	if err == nil && status == http.StatusForbidden && strings.Contains(msg, "invalid token") {
		return fmt.Errorf("%w: VAULT_TOKEN rejected (403): the token is invalid, expired or revoked: log in again (vault login) or check vault.token_file / vault.auth", ErrMisconfigured)
	}
	hint := fmt.Sprintf("write vaultstore/policies/%s with secret/ and keygate/ changed to %s/ and %s/ (vault policy write keygate %s) and give the token that policy",
		policy, mount, base, policy)
	if err == nil && status == http.StatusForbidden {
		// lookup-self is in Vault's default policy; a token without it may still be valid.
		return fmt.Errorf("%w: Vault denied reading %s (403): VAULT_TOKEN is rejected, or its policies do not reach keygate's path: %s",
			ErrMisconfigured, path, hint)
	}
	return fmt.Errorf("%w: the token's policies do not allow %s (403): %s", ErrMisconfigured, path, hint)
}

// unreachable explains a transport failure, naming where the address came from.
func unreachable(addr, source string, err error) error {
	where := "VAULT_ADDR is not set, so the client's default " + addr + " applies"
	if source != "" {
		where = "from " + source
	}
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w: Vault at %s (%s) speaks plain HTTP, not HTTPS: set VAULT_ADDR (or vault.address) to its http:// address, such as http://127.0.0.1:8200",
			ErrMisconfigured, addr, where)
	}
	return fmt.Errorf("%w: cannot reach Vault at %s (%s): %w", ErrVaultUnavailable, addr, where, err)
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

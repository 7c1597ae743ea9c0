package vaultstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// Vault auth methods keygate can log in with.
const (
	AuthToken   = "token"   // the client's token as given (VAULT_TOKEN or a token file)
	AuthAppRole = "approle" // role_id and secret_id read from files
	AuthCert    = "cert"    // the TLS client certificate of the Vault client (air-gapped sites)
)

// ErrAuth means keygate could not log in to Vault.
var ErrAuth = errors.New("vault login failed")

// AuthConfig says how to log in to Vault.
type AuthConfig struct {
	// Method is AuthToken (the default when empty), AuthAppRole or AuthCert.
	Method string
	// Mount is the auth method's mount path; "" means the method's name.
	Mount string
	// RoleIDFile and SecretIDFile hold the AppRole credentials (surrounding whitespace
	// is ignored), so they can come from a Kubernetes secret or a response-wrapped
	// delivery without appearing in the config or the environment.
	RoleIDFile, SecretIDFile string
	// CertRole is the cert auth role to log in as; "" lets Vault pick the role whose CA
	// signed the client certificate.
	CertRole string
	// Logger receives renewal and re-login events; nil discards them.
	Logger *slog.Logger
}

// Authenticator logs a Vault client in and keeps its token alive.
type Authenticator struct {
	client *api.Client
	cfg    AuthConfig
	log    *slog.Logger
	logins atomic.Int64
}

// NewAuthenticator returns an Authenticator for client. It does not contact Vault.
func NewAuthenticator(client *api.Client, cfg AuthConfig) (*Authenticator, error) {
	if cfg.Method == "" {
		cfg.Method = AuthToken
	}
	if cfg.Mount == "" {
		cfg.Mount = cfg.Method
	}
	switch cfg.Method {
	case AuthToken, AuthCert:
	case AuthAppRole:
		if cfg.RoleIDFile == "" || cfg.SecretIDFile == "" {
			return nil, fmt.Errorf("%w: approle needs a role_id file and a secret_id file", ErrAuth)
		}
	default:
		return nil, fmt.Errorf("%w: unknown auth method %q (want token, approle or cert)", ErrAuth, cfg.Method)
	}
	if err := checkPath(cfg.Mount); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Authenticator{client: client, cfg: cfg, log: cfg.Logger}, nil
}

// Logins returns how many times the Authenticator logged in (or, for AuthToken, looked
// its token up).
func (a *Authenticator) Logins() int64 { return a.logins.Load() }

// Login logs in once and sets the client's token. For AuthToken it checks the token.
func (a *Authenticator) Login(ctx context.Context) (*api.Secret, error) {
	var (
		sec *api.Secret
		err error
	)
	switch a.cfg.Method {
	case AuthToken:
		if a.client.Token() == "" {
			return nil, fmt.Errorf("%w: no Vault token: set VAULT_TOKEN or a token file", ErrAuth)
		}
		sec, err = a.lookupSelf(ctx)
	case AuthAppRole:
		var roleID, secretID string
		if roleID, err = readSecretFile(a.cfg.RoleIDFile); err == nil {
			secretID, err = readSecretFile(a.cfg.SecretIDFile)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrAuth, err)
		}
		sec, err = a.client.Logical().WriteWithContext(ctx, "auth/"+a.cfg.Mount+"/login",
			map[string]any{"role_id": roleID, "secret_id": secretID})
	case AuthCert:
		data := map[string]any{}
		if a.cfg.CertRole != "" {
			data["name"] = a.cfg.CertRole
		}
		sec, err = a.client.Logical().WriteWithContext(ctx, "auth/"+a.cfg.Mount+"/login", data)
	}
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %w", ErrAuth, a.cfg.Method, err)
	}
	if sec == nil || sec.Auth == nil || sec.Auth.ClientToken == "" {
		return nil, fmt.Errorf("%w (%s): no token in the answer", ErrAuth, a.cfg.Method)
	}
	a.client.SetToken(sec.Auth.ClientToken)
	a.logins.Add(1)
	return sec, nil
}

// lookupSelf describes the client's own token as an auth secret, so a renewable token
// from VAULT_TOKEN is renewed like a login token.
func (a *Authenticator) lookupSelf(ctx context.Context) (*api.Secret, error) {
	sec, err := a.client.Auth().Token().LookupSelfWithContext(ctx)
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == 403 {
		// A token without the default policy cannot look itself up; use it as it is.
		a.log.Warn("vault token cannot look itself up (no default policy); it will not be renewed")
		return &api.Secret{Auth: &api.SecretAuth{ClientToken: a.client.Token()}}, nil
	}
	if err != nil {
		return nil, err
	}
	var ttl int64
	if n, ok := sec.Data["ttl"].(json.Number); ok {
		ttl, _ = n.Int64()
	}
	renewable, _ := sec.Data["renewable"].(bool)
	return &api.Secret{Auth: &api.SecretAuth{
		ClientToken: a.client.Token(), Renewable: renewable, LeaseDuration: int(ttl),
	}}, nil
}

// Start logs in, then keeps the token alive in the background until ctx ends: it renews
// the token before it expires and logs in again when renewal fails or the token reaches
// its maximum TTL. It returns the first login's error, if any.
func (a *Authenticator) Start(ctx context.Context) error {
	sec, err := a.Login(ctx)
	if err != nil {
		return err
	}
	go a.keep(ctx, sec)
	return nil
}

func (a *Authenticator) keep(ctx context.Context, sec *api.Secret) {
	for {
		if sec.Auth.LeaseDuration <= 0 {
			return // a token that never expires (root, or no TTL): nothing to do
		}
		w, err := a.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: sec})
		if err != nil {
			a.log.Error("vault token watcher", slog.String("error", err.Error()))
			return
		}
		go w.Start()
		err = a.watch(ctx, w)
		w.Stop()
		if ctx.Err() != nil {
			return
		}
		if a.cfg.Method == AuthToken {
			a.log.Error("vault token can no longer be renewed; give keygate a new token or use approle or cert auth",
				slog.String("reason", errString(err)))
			return
		}
		a.log.Info("vault token ends; logging in again", slog.String("reason", errString(err)))
		if sec = a.relogin(ctx); sec == nil {
			return
		}
	}
}

// watch waits for the watcher to give up (renewal failed, or the token's maximum TTL is
// near) or for ctx to end.
func (a *Authenticator) watch(ctx context.Context, w *api.LifetimeWatcher) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-w.DoneCh():
			return err
		case r := <-w.RenewCh():
			a.log.Debug("vault token renewed", slog.Int("ttl_seconds", r.Secret.Auth.LeaseDuration))
		}
	}
}

// relogin logs in again, backing off from 1 s to 30 s between failures, until it works
// or ctx ends (then it returns nil).
func (a *Authenticator) relogin(ctx context.Context) *api.Secret {
	wait := time.Second
	for {
		sec, err := a.Login(ctx)
		if err == nil {
			return sec
		}
		a.log.Error("vault login", slog.String("error", err.Error()), slog.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

func errString(err error) string {
	if err == nil {
		return "maximum TTL reached"
	}
	return err.Error()
}

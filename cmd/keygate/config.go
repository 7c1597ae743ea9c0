package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/redis/go-redis/v9"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"sigs.k8s.io/yaml"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/envoy"
	"github.com/keygate/keygate/internal/duration"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/vaultstore"
)

// config is keygate's configuration file. Every field has a default; flags override
// the file.
type config struct {
	GRPCAddr        string         `json:"grpc_addr"`        // ext_authz gRPC listener
	HTTPAddr        string         `json:"http_addr"`        // /healthz and /readyz; "" disables
	DenyProfile     string         `json:"deny_profile"`     // magicx, apikey, mythiq or openai
	KeyPrefix       string         `json:"key_prefix"`       // e.g. mgx-sk-
	Realm           string         `json:"realm"`            // WWW-Authenticate realm
	KeepCredentials bool           `json:"keep_credentials"` // forward Authorization/X-API-Key upstream
	LogLevel        string         `json:"log_level"`        // debug, info, warn, error
	AdminAddr       string         `json:"admin_addr"`       // key management API; "" disables
	AuditLog        string         `json:"audit_log"`        // "" (none), "stdout", or a file path
	AuditRecent     int            `json:"audit_recent"`     // events kept in memory for GET /audit; 0: none
	RotationGrace   configDuration `json:"rotation_grace"`   // admin API rotations that name no grace
	UsageFlush      configDuration `json:"usage_flush"`      // last-used times are written this often
	ShutdownDelay   configDuration `json:"shutdown_delay"`   // on stop, keep serving this long while NOT_SERVING
	ShutdownGrace   configDuration `json:"shutdown_grace"`   // then in-flight checks get this long
	Terminate       struct {
		Addr     string       `json:"addr"`     // the mTLS terminator's listener; "" disables
		Upstream string       `json:"upstream"` // where allowed requests go
		TLS      *listenerTLS `json:"tls"`      // client certificates are always required
		MaxBody  int64        `json:"max_body"` // bytes of body the check sees (model routes)
	} `json:"terminate"`
	TLS struct {
		GRPC  *listenerTLS `json:"grpc"`  // the ext_authz listener (ALPN h2)
		HTTP  *listenerTLS `json:"http"`  // health, metrics
		Admin *listenerTLS `json:"admin"` // the admin API
		// ReloadInterval is how often the files are checked for changes (SIGHUP reloads at once).
		ReloadInterval configDuration `json:"reload_interval"`
	} `json:"tls"`
	Vault struct {
		Address       string         `json:"address"`        // default $VAULT_ADDR
		Addresses     []string       `json:"addresses"`      // several nodes of one cluster, failed over in turn
		TokenFile     string         `json:"token_file"`     // default $VAULT_TOKEN
		Mount         string         `json:"mount"`          // KV v2 mount
		Path          string         `json:"path"`           // base path inside the mount
		LookupTimeout configDuration `json:"lookup_timeout"` // cap on one Vault read while checking
		Auth          struct {
			Method       string `json:"method"`         // token (default), approle or cert
			Mount        string `json:"mount"`          // auth mount; default the method's name
			RoleIDFile   string `json:"role_id_file"`   // approle
			SecretIDFile string `json:"secret_id_file"` // approle
			CertRole     string `json:"cert_role"`      // cert: role to log in as
		} `json:"auth"`
		TLS vaultTLS `json:"tls"`
	} `json:"vault"`
	Policy      authz.Policy `json:"policy"`
	ClientCerts struct {
		CAFile             string               `json:"ca_file"`              // CA bundle; "": client certificates are ignored
		CRLFile            string               `json:"crl_file"`             // optional CRL, signed by one of those CAs
		Require            bool                 `json:"require"`              // every request needs a verified certificate
		TrustForwardedFrom []envoy.TrustedProxy `json:"trust_forwarded_from"` // front proxies, each with the one header it sets
		IdentityRules      []authz.IdentityRule `json:"identity_rules"`       // certificates that need no key
	} `json:"client_certs"`
	Connections connLimits `json:"connections"` // per-listener caps and timeouts (limits.go)
	Metrics     struct {
		PerKey bool `json:"per_key"` // a series per key id (label cardinality): off by default
	} `json:"metrics"`
	RateLimits struct {
		Backend     string                    `json:"backend"`      // local (default) or redis
		DefaultPlan string                    `json:"default_plan"` // "": keys without a plan are not limited
		Plans       map[string]ratelimit.Plan `json:"plans"`
		Redis       struct {
			Address      string         `json:"address"`
			Mode         string         `json:"mode"`        // single (default), sentinel or cluster
			Addresses    []string       `json:"addresses"`   // sentinels, or cluster nodes; single: address
			MasterName   string         `json:"master_name"` // sentinel: the monitored master's name
			PasswordFile string         `json:"password_file"`
			DB           int            `json:"db"`
			Prefix       string         `json:"prefix"`
			Timeout      configDuration `json:"timeout"`    // per Redis call
			OnFailure    string         `json:"on_failure"` // closed (503, default) or open (allow)
		} `json:"redis"`
	} `json:"rate_limits"`
	Cache struct {
		Size        int            `json:"size"`         // records, known and unknown
		TTL         configDuration `json:"ttl"`          // a record is read again after this
		NegativeTTL configDuration `json:"negative_ttl"` // an unknown key is re-checked after this
		StaleFor    configDuration `json:"stale_for"`    // serve past the TTL while Vault is down
		MissRate    float64        `json:"miss_rate"`    // Vault reads/s for uncached keys
		MissBurst   int            `json:"miss_burst"`   // reads at once for uncached keys
		// Each client's share of the above, and spray detection (vaultstore.CacheConfig).
		SourceMissRate  float64        `json:"source_miss_rate"`
		SourceMissBurst int            `json:"source_miss_burst"`
		SprayFailures   int            `json:"spray_failures"` // unknown keys per window; -1: off
		SprayWindow     configDuration `json:"spray_window"`
		PollInterval    configDuration `json:"poll_interval"` // change feed (revocations) poll
	} `json:"cache"`
	Usage usageConfig `json:"usage"` // per-key usage analytics (usage.go)

	src *configSource // the file it was read from, for line numbers in problems
}

func defaultConfig() config {
	var c config
	c.GRPCAddr = "127.0.0.1:9001"
	c.HTTPAddr = "127.0.0.1:9002"
	c.DenyProfile = authz.ProfileMagicx.String()
	c.KeyPrefix = "mgx-sk-"
	c.Realm = "keygate"
	c.LogLevel = "info"
	c.AdminAddr = "127.0.0.1:9003"
	c.AuditRecent = audit.DefaultRecent
	c.RotationGrace = configDuration(30 * 24 * time.Hour)
	c.UsageFlush = configDuration(time.Minute)
	c.TLS.ReloadInterval = configDuration(2 * time.Second)
	c.ShutdownGrace = configDuration(10 * time.Second)
	c.Vault.Mount = "secret"
	c.Vault.Path = "keygate"
	c.Vault.LookupTimeout = configDuration(vaultstore.DefaultLookupTimeout)
	c.RateLimits.Backend = "local"
	c.RateLimits.Redis.Address = "127.0.0.1:6379"
	c.RateLimits.Redis.Prefix = "keygate:"
	c.RateLimits.Redis.Timeout = configDuration(100 * time.Millisecond)
	c.RateLimits.Redis.OnFailure = "closed"
	c.Cache.Size = 100_000
	c.Cache.TTL = configDuration(5 * time.Minute)
	c.Cache.NegativeTTL = configDuration(30 * time.Second)
	c.Cache.StaleFor = configDuration(time.Hour)
	c.Cache.MissRate = 100
	c.Cache.MissBurst = 200
	c.Cache.SourceMissRate = 10
	c.Cache.SourceMissBurst = 20
	c.Cache.SprayFailures = 100
	c.Cache.SprayWindow = configDuration(time.Minute)
	c.Cache.PollInterval = configDuration(500 * time.Millisecond)
	c.Connections = defaultConnLimits()
	return c
}

// listenerTLS serves one listener over TLS.
type listenerTLS struct {
	CertFile          string `json:"cert_file"`
	KeyFile           string `json:"key_file"`
	ClientCAFile      string `json:"client_ca_file"`      // client certificates must chain to it
	CRLFile           string `json:"crl_file"`            // optional CRL for them
	Profile           string `json:"profile"`             // default or cnsa
	RequireClientCert bool   `json:"require_client_cert"` // mTLS
}

func (l *listenerTLS) reloader() (*certs.Reloader, error) {
	return certs.NewReloader(certs.ReloaderConfig{CertFile: l.CertFile, KeyFile: l.KeyFile, ClientCAFile: l.ClientCAFile,
		CRLFile: l.CRLFile, Profile: l.Profile, RequireClientCert: l.RequireClientCert})
}

// vaultTLS is how keygate connects to a Vault served over TLS.
type vaultTLS struct {
	CACert     string `json:"ca_cert"`     // default $VAULT_CACERT
	ClientCert string `json:"client_cert"` // default $VAULT_CLIENT_CERT; needed for cert auth
	ClientKey  string `json:"client_key"`  // default $VAULT_CLIENT_KEY
	ServerName string `json:"server_name"` // default $VAULT_TLS_SERVER_NAME
}

// commonFlags are the flags every command that talks to Vault accepts.
type commonFlags struct {
	configFile string
	keyPrefix  string
	mount      string
	path       string
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configFile, "config", "", "configuration file (YAML)")
	fs.StringVar(&c.keyPrefix, "key-prefix", "", "API key prefix (default from config: mgx-sk-)")
	fs.StringVar(&c.mount, "vault-mount", "", "Vault KV v2 mount (default from config: secret)")
	fs.StringVar(&c.path, "vault-path", "", "base path of keygate's records in the mount (default from config: keygate)")
}

// load reads the configuration file, if any, reporting every problem in it with its
// line, and applies the common flags that were set.
func (c *commonFlags) load(fs *flag.FlagSet) (config, error) {
	cfg := defaultConfig()
	if c.configFile != "" {
		var err error
		if cfg, err = loadConfigFile(c.configFile); err != nil {
			return cfg, err
		}
	}
	setFlags(fs, map[string]flagField{
		"key-prefix":  {&c.keyPrefix, &cfg.KeyPrefix},
		"vault-mount": {&c.mount, &cfg.Vault.Mount},
		"vault-path":  {&c.path, &cfg.Vault.Path},
	})
	return cfg, nil
}

// parseConfig reads a YAML configuration over the defaults. Unknown fields are errors.
func parseConfig(raw []byte) (config, error) {
	cfg := defaultConfig()
	err := yaml.UnmarshalStrict(raw, &cfg)
	return cfg, err
}

// flagField pairs a string flag's value with the config field it overrides.
type flagField struct{ value, field *string }

// setFlags copies every flag set on the command line into its config field, so an
// explicit empty value (--http-addr "") overrides too.
func setFlags(fs *flag.FlagSet, fields map[string]flagField) {
	fs.Visit(func(f *flag.Flag) {
		if ff, ok := fields[f.Name]; ok {
			*ff.field = *ff.value
		}
	})
}

func (cfg *config) format() (authz.Format, error) { return authz.NewFormat(cfg.KeyPrefix) }

// vaultClient returns a Vault client from VAULT_ADDR, VAULT_TOKEN and the usual VAULT_*
// variables, overridden by the config file, and an Authenticator for the configured
// auth method. retries is the client's retry count for 5xx answers.
func (cfg *config) vaultClient(retries int, log *slog.Logger) (*api.Client, *vaultstore.Authenticator, error) {
	vc := api.DefaultConfig()
	if vc.Error != nil {
		return nil, nil, fmt.Errorf("vault config: %w", vc.Error)
	}
	if cfg.Vault.Address != "" {
		vc.Address = cfg.Vault.Address
	}
	if len(cfg.Vault.Addresses) > 0 {
		if cfg.Vault.Address != "" {
			return nil, nil, errors.New("vault: set address or addresses, not both")
		}
		vc.Address = cfg.Vault.Addresses[0]
	}
	if t := cfg.Vault.TLS; t != (vaultTLS{}) {
		// Settings the file leaves out keep their VAULT_* environment values.
		tc := api.TLSConfig{
			CACert:        cmp.Or(t.CACert, os.Getenv(api.EnvVaultCACert)),
			ClientCert:    cmp.Or(t.ClientCert, os.Getenv(api.EnvVaultClientCert)),
			ClientKey:     cmp.Or(t.ClientKey, os.Getenv(api.EnvVaultClientKey)),
			TLSServerName: cmp.Or(t.ServerName, os.Getenv(api.EnvVaultTLSServerName)),
		}
		if err := vc.ConfigureTLS(&tc); err != nil {
			return nil, nil, fmt.Errorf("vault tls: %w", err)
		}
	}
	if len(cfg.Vault.Addresses) > 0 {
		f, err := vaultstore.NewFailover(vc.HttpClient.Transport, cfg.Vault.Addresses, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("vault.addresses: %w", err)
		}
		vc.HttpClient.Transport = f
	}
	vc.MaxRetries = retries
	client, err := api.NewClient(vc)
	if err != nil {
		return nil, nil, fmt.Errorf("vault client: %w", err)
	}
	if cfg.Vault.TokenFile != "" {
		tok, err := os.ReadFile(cfg.Vault.TokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("vault token: %w", err)
		}
		client.SetToken(strings.TrimSpace(string(tok)))
	}
	a := cfg.Vault.Auth
	auth, err := vaultstore.NewAuthenticator(client, vaultstore.AuthConfig{
		Method: a.Method, Mount: a.Mount, RoleIDFile: a.RoleIDFile, SecretIDFile: a.SecretIDFile,
		CertRole: a.CertRole, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return client, auth, nil
}

// store returns the key store; log (nil: none) receives its failed Vault requests.
func (cfg *config) store(client *api.Client, log *slog.Logger) (*vaultstore.Store, error) {
	return vaultstore.New(vaultstore.Config{
		Logger:        log,
		Client:        client,
		Mount:         cfg.Vault.Mount,
		Path:          cfg.Vault.Path,
		LookupTimeout: time.Duration(cfg.Vault.LookupTimeout),
	})
}

func (cfg *config) cache(store *vaultstore.Store, onSpray func(source string, failures int)) (*vaultstore.Cache, error) {
	c := cfg.Cache
	// stale_for: 0 means no stale serving at all (the cache reads 0 as its default).
	staleFor := time.Duration(c.StaleFor)
	if staleFor == 0 {
		staleFor = -1
	}
	return vaultstore.NewCache(store, vaultstore.CacheConfig{
		Size: c.Size, TTL: time.Duration(c.TTL), NegativeTTL: time.Duration(c.NegativeTTL),
		StaleFor: staleFor, MissRate: c.MissRate, MissBurst: c.MissBurst,
		SourceMissRate: c.SourceMissRate, SourceMissBurst: c.SourceMissBurst, SprayFailures: c.SprayFailures,
		SprayWindow: time.Duration(c.SprayWindow), OnSpraySuspected: onSpray,
		PollInterval: time.Duration(c.PollInterval), Metrics: true,
	})
}

// limiter returns the configured rate limiter, nil when no plan is configured, and
// whether it fails open.
func (cfg *config) limiter() (*ratelimit.Limiter, bool, io.Closer, error) {
	rl := cfg.RateLimits
	if len(rl.Plans) == 0 {
		return nil, false, nil, nil
	}
	var (
		backend ratelimit.Backend
		closer  io.Closer
	)
	switch rl.Backend {
	case "local":
		local, err := ratelimit.NewLocal(0, nil)
		if err != nil {
			return nil, false, nil, err
		}
		backend = local
	case "redis":
		rdb, err := cfg.redisClient()
		if err != nil {
			return nil, false, nil, err
		}
		backend, closer = ratelimit.NewRedis(rdb, rl.Redis.Prefix), rdb
	default:
		return nil, false, nil, fmt.Errorf("rate_limits.backend must be local or redis, not %q", rl.Backend)
	}
	if rl.Redis.OnFailure != "open" && rl.Redis.OnFailure != "closed" {
		return nil, false, nil, fmt.Errorf("rate_limits.redis.on_failure must be open or closed, not %q", rl.Redis.OnFailure)
	}
	l, err := ratelimit.New(backend, rl.Plans, rl.DefaultPlan)
	return l, rl.Redis.OnFailure == "open", closer, err
}

// redisClient returns the rate limits' Redis client for the configured mode: one
// server, a master found through Sentinel, or a Redis Cluster.
func (cfg *config) redisClient() (redis.UniversalClient, error) {
	r := cfg.RateLimits.Redis
	t := time.Duration(r.Timeout)
	// One dial per connection attempt: go-redis otherwise dials five times, 100 ms apart,
	// and a check would wait on a dead server past its own deadline.
	opts := &redis.UniversalOptions{DB: r.DB, MaxRetries: -1, DialTimeout: t, ReadTimeout: t, WriteTimeout: t,
		DialerRetries: 1}
	if r.PasswordFile != "" {
		pw, err := os.ReadFile(r.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("rate_limits.redis.password_file: %w", err)
		}
		opts.Password = strings.TrimSpace(string(pw))
	}
	switch r.Mode {
	case "", "single":
		if len(r.Addresses) > 0 || r.MasterName != "" {
			return nil, errors.New("rate_limits.redis: addresses and master_name need mode sentinel or cluster; mode single uses address")
		}
		opts.Addrs = []string{r.Address}
		return redis.NewClient(opts.Simple()), nil
	case "sentinel":
		if len(r.Addresses) == 0 || r.MasterName == "" {
			return nil, errors.New("rate_limits.redis: mode sentinel needs addresses (the sentinels) and master_name")
		}
		opts.Addrs, opts.MasterName = r.Addresses, r.MasterName
		return redis.NewFailoverClient(opts.Failover()), nil
	case "cluster":
		if len(r.Addresses) == 0 || r.MasterName != "" || r.DB != 0 {
			return nil, errors.New("rate_limits.redis: mode cluster needs addresses (cluster nodes), and takes no master_name or db")
		}
		opts.Addrs = r.Addresses
		// A moved slot or a failed master is followed to its new owner: a few
		// redirects per call, each within the call's timeout.
		opts.MaxRedirects = 3
		return redis.NewClusterClient(opts.Cluster()), nil
	default:
		return nil, fmt.Errorf("rate_limits.redis.mode must be single, sentinel or cluster, not %q", r.Mode)
	}
}

// clientCerts returns the client certificate verifier, nil when no CA is configured.
func (cfg *config) clientCerts() (*certs.Verifier, error) {
	cc := cfg.ClientCerts
	if cc.CAFile == "" {
		if cc.Require || len(cc.IdentityRules) > 0 || len(cc.TrustForwardedFrom) > 0 || cc.CRLFile != "" {
			return nil, errors.New("client_certs: require, identity_rules, trust_forwarded_from and crl_file need ca_file")
		}
		return nil, nil
	}
	ca, err := os.ReadFile(cc.CAFile)
	if err != nil {
		return nil, fmt.Errorf("client_certs.ca_file: %w", err)
	}
	var crl []byte
	if cc.CRLFile != "" {
		if crl, err = os.ReadFile(cc.CRLFile); err != nil {
			return nil, fmt.Errorf("client_certs.crl_file: %w", err)
		}
	}
	v, err := certs.NewVerifier(ca, crl, nil)
	if err != nil {
		return nil, fmt.Errorf("client_certs: %w", err)
	}
	return v, nil
}

// logLevel parses log_level (or --log-level): debug, info, warn or error.
func (cfg *config) logLevel() (slog.Level, error) {
	var l slog.Level
	switch strings.ToLower(cfg.LogLevel) {
	case "debug", "info", "warn", "error":
		_ = l.UnmarshalText([]byte(cfg.LogLevel))
		return l, nil
	}
	return 0, fmt.Errorf("log_level: unknown level %q: use debug, info, warn or error", cfg.LogLevel)
}

// configDuration is a time.Duration written as "150ms", "10s" or "30d" in the config.
type configDuration time.Duration

func (d *configDuration) UnmarshalJSON(b []byte) error {
	if string(b) == "0" { // a bare 0 needs no unit
		*d = 0
		return nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %s: %s", b, duration.Hint)
	}
	v, err := duration.Parse(s)
	if err != nil {
		return err
	}
	*d = configDuration(v)
	return nil
}

func (d configDuration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(time.Duration(d).String())), nil
}

// preflight checks Vault as configured: token, KV v2 mount, and the policy's reach over
// keygate's path (keys: what the keys commands need too).
func (cfg *config) preflight(ctx context.Context, client *api.Client, keys bool) error {
	source := ""
	switch {
	case cfg.Vault.Address != "":
		source = "vault.address"
	case os.Getenv(api.EnvVaultAddress) != "":
		source = api.EnvVaultAddress
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return vaultstore.Preflight(ctx, vaultstore.PreflightConfig{Client: client, Mount: cfg.Vault.Mount, Path: cfg.Vault.Path,
		Keys: keys, AddrSource: source})
}

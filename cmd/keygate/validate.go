package main

import (
	"bytes"
	stdcmp "cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/certs"
	"github.com/keygate/keygate/ratelimit"
	"github.com/keygate/keygate/vaultstore"
)

const validateUsage = `usage: keygate config validate --config FILE

Checks a configuration file without contacting Vault: the YAML, every field's name and
value, and every file it names (certificates, keys, CA bundles, CRLs, AppRole, token
and password files). Prints every problem with its field and line; exit status 0 when
there is none, 1 otherwise.
`

// runConfig is "keygate config": only validate, for now.
func runConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "validate" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, validateUsage)
			return nil
		}
		fmt.Fprint(stderr, validateUsage)
		return exitCode(2)
	}
	fs := flag.NewFlagSet("keygate config validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file (YAML); required")
	if err := fs.Parse(args[1:]); err != nil {
		return exitCode(2)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config validate: unexpected argument %q", fs.Arg(0))
	}
	if *file == "" {
		return errors.New("config validate: --config FILE is required")
	}
	// Every problem: the file's structure, then the values that could be read, then
	// the files named.
	cfg, err := loadConfigFile(*file)
	var probs []problem
	var ce *configError
	switch {
	case errors.As(err, &ce):
		probs = ce.Problems
	case err != nil:
		return err
	}
	if err := cfg.validate(true); errors.As(err, &ce) {
		probs = append(probs, ce.Problems...)
	}
	if len(probs) > 0 {
		slices.SortStableFunc(probs, func(a, b problem) int {
			return stdcmp.Or(stdcmp.Compare(a.Line, b.Line), strings.Compare(a.Path, b.Path))
		})
		fmt.Fprintln(stderr, &configError{File: *file, Problems: probs})
		return exitCode(1)
	}
	fmt.Fprintf(stdout, "%s: configuration OK (every named file was read)\n", *file)
	return nil
}

// problem is one thing wrong with a configuration: the field's path (cache.ttl), the
// line it is on in the file (0: unknown, or not from the file) and what is wrong.
type problem struct {
	Path string
	Line int
	Msg  string
}

func (p problem) String() string {
	s := p.Msg
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Line > 0 {
		s += fmt.Sprintf(" (line %d)", p.Line)
	}
	return s
}

// configError is every problem found in a configuration.
type configError struct {
	File     string
	Problems []problem
}

func (e *configError) Error() string {
	name := "config"
	if e.File != "" {
		name = "config " + e.File + " (YAML)"
	}
	if len(e.Problems) == 1 {
		return name + ": " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problems:", name, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  " + p.String())
	}
	return b.String()
}

// configSource remembers where a configuration came from, to name lines in problems.
type configSource struct {
	file  string
	lines map[string]int // field path → line
}

func (s *configSource) line(path string) int {
	if s == nil {
		return 0
	}
	for path != "" {
		if l, ok := s.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// loadConfigFile reads and parses a configuration file, reporting every unknown field,
// misplaced value and undecodable value with its line.
func loadConfigFile(file string) (config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return defaultConfig(), fmt.Errorf("config: %w", err)
	}
	cfg, src, probs := parseConfigLines(raw)
	src.file = file
	cfg.src = src
	if len(probs) > 0 {
		return cfg, &configError{File: file, Problems: probs}
	}
	return cfg, nil
}

// parseConfigLines parses raw over the defaults. It returns every problem it finds,
// each with its line, where parseConfig stops at the first.
func parseConfigLines(raw []byte) (config, *configSource, []problem) {
	src := &configSource{lines: map[string]int{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if bytes.ContainsRune(raw, '\t') && strings.Contains(msg, "cannot start any token") {
			msg += " (YAML indents with spaces, never tabs)"
		}
		return defaultConfig(), src, []problem{{Msg: "not valid YAML: " + msg}}
	}
	cfg := defaultConfig()
	d := &nodeDecoder{src: src}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if root.Kind != yaml.MappingNode && !isNull(root) {
			return cfg, src, []problem{{Line: root.Line, Msg: "the file must be a YAML mapping of fields (grpc_addr: 127.0.0.1:9001, one per line)"}}
		}
		d.walk("", root, reflect.ValueOf(&cfg).Elem(), 0)
	}
	if len(d.problems) > 0 {
		return cfg, src, d.problems
	}
	// The reference parser decides what a valid file means; the walk above only finds
	// where things are. A disagreement is still reported.
	strict, err := parseConfig(raw)
	if err != nil {
		return cfg, src, []problem{{Msg: strings.ReplaceAll(err.Error(), "JSON", "YAML")}}
	}
	return strict, src, nil
}

// nodeDecoder walks a YAML node tree along the config's type.
type nodeDecoder struct {
	src      *configSource
	problems []problem
}

func (d *nodeDecoder) fail(path string, line int, format string, args ...any) {
	d.problems = append(d.problems, problem{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func (d *nodeDecoder) walk(path string, n *yaml.Node, v reflect.Value, depth int) {
	for n.Kind == yaml.AliasNode && n.Alias != nil && depth < 100 {
		n, depth = n.Alias, depth+1
	}
	if depth > 100 {
		d.fail(path, n.Line, "nested too deeply")
		return
	}
	if path != "" {
		d.src.lines[path] = n.Line
	}
	t := v.Type()
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		d.leaf(path, n, v)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.walk(path, n, v.Elem(), depth+1)
	case reflect.Struct:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(path, n.Line, "want a mapping of fields (name: value), got %s", describe(n))
			return
		}
		fields := jsonFields(t)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			name := k.Value
			p := join(path, name)
			if first, dup := seen[name]; dup {
				d.fail(p, k.Line, "given twice (first on line %d)", first)
				continue
			}
			seen[name] = k.Line
			idx, ok := fields[name]
			if !ok {
				d.fail(p, k.Line, "unknown field%s", suggest(name, path, fields))
				continue
			}
			d.walk(p, val, v.FieldByIndex(idx), depth+1)
		}
	case reflect.Map:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.MappingNode {
			d.fail(path, n.Line, "want a mapping (name: value), got %s", describe(n))
			return
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(t))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
				d.fail(p, k.Line, "given twice")
				continue
			}
			e := reflect.New(t.Elem()).Elem()
			d.walk(p, val, e, depth+1)
			v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
		}
	case reflect.Slice:
		if isNull(n) {
			return
		}
		if n.Kind != yaml.SequenceNode {
			if t.Elem().Kind() == reflect.String && n.Kind == yaml.ScalarNode {
				d.fail(path, n.Line, "want a list ([a, b] or one \"- item\" per line), got %s", describe(n))
				return
			}
			d.fail(path, n.Line, "want a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, e := range n.Content {
			d.walk(fmt.Sprintf("%s[%d]", path, i), e, s.Index(i), depth+1)
		}
		v.Set(s)
	default:
		d.leaf(path, n, v)
	}
}

// leaf decodes one value as the strict parser does: YAML to JSON, then JSON.
func (d *nodeDecoder) leaf(path string, n *yaml.Node, v reflect.Value) {
	var x any
	if err := n.Decode(&x); err != nil {
		d.fail(path, n.Line, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return
	}
	raw, err := json.Marshal(x)
	if err != nil {
		d.fail(path, n.Line, "want %s, got %s", typeName(v.Type()), describe(n))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v.Addr().Interface()); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			d.fail(path, n.Line, "want %s, got %s", typeName(v.Type()), describe(n))
			return
		}
		d.fail(path, n.Line, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		switch n.Tag {
		case "!!str":
			return strconv.Quote(v)
		case "!!null":
			return "nothing"
		}
		return v
	}
	return "something else"
}

func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[configDuration]():
		return "a duration such as 90d or 1h30m"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number"
	case reflect.Float64, reflect.Float32:
		return "a number"
	case reflect.Slice:
		return "a list"
	}
	return "a " + t.Kind().String()
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// jsonFields maps a struct type's JSON names to their field indexes.
func jsonFields(t reflect.Type) map[string][]int {
	out := map[string][]int{}
	for _, f := range reflect.VisibleFields(t) {
		if !f.IsExported() || f.Anonymous {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Index
	}
	return out
}

// suggest names the field a typo most likely meant: a sibling a few edits away, or a
// field of that name elsewhere in the configuration.
func suggest(name, path string, fields map[string][]int) string {
	var elsewhere []string
	for _, p := range allPaths() {
		if p == name || strings.HasSuffix(p, "."+name) {
			elsewhere = append(elsewhere, p)
		}
	}
	if len(elsewhere) > 0 {
		return fmt.Sprintf(" here (did you mean %s?)", strings.Join(elsewhere, " or "))
	}
	best, bestD := "", 1<<30
	for f := range fields {
		if d := editDistance(strings.ToLower(name), f); d < bestD || d == bestD && f < best {
			best, bestD = f, d
		}
	}
	if best != "" && bestD <= max(2, len(name)/3) {
		return fmt.Sprintf(" (did you mean %s?)", join(path, best))
	}
	fs := make([]string, 0, len(fields))
	for f := range fields {
		fs = append(fs, f)
	}
	sort.Strings(fs)
	if len(fs) > 12 {
		return " (see README's configuration reference)"
	}
	return " (fields here: " + strings.Join(fs, ", ") + ")"
}

// allPaths lists every field path of the configuration.
func allPaths() []string {
	var out []string
	var walk func(prefix string, t reflect.Type, depth int)
	walk = func(prefix string, t reflect.Type, depth int) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || depth > 4 || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
			return
		}
		for name, idx := range jsonFields(t) {
			p := join(prefix, name)
			out = append(out, p)
			walk(p, t.FieldByIndex(idx).Type, depth+1)
		}
	}
	walk("", reflect.TypeFor[config](), 0)
	sort.Strings(out)
	return out
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// validate checks every value of the configuration and, when files is true, reads every
// file it names. It returns a *configError listing every problem, or nil.
func (cfg *config) validate(files bool) error {
	v := &checker{cfg: cfg}
	v.values()
	if files {
		v.files()
	}
	if len(v.problems) == 0 {
		return nil
	}
	e := &configError{Problems: v.problems}
	if cfg.src != nil {
		e.File = cfg.src.file
		for i := range e.Problems {
			e.Problems[i].Line = cfg.src.line(e.Problems[i].Path)
		}
	}
	slices.SortStableFunc(e.Problems, func(a, b problem) int {
		return stdcmp.Or(stdcmp.Compare(a.Line, b.Line), strings.Compare(a.Path, b.Path))
	})
	return e
}

type checker struct {
	cfg      *config
	problems []problem
}

func (c *checker) fail(path string, format string, args ...any) {
	c.problems = append(c.problems, problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// noLookup lets the engine validate a policy without a store.
type noLookup struct{}

func (noLookup) Lookup(context.Context, authz.KeyHash) (authz.Record, error) {
	return authz.Record{}, authz.ErrKeyNotFound
}

func (c *checker) values() {
	cfg := c.cfg
	for path, addr := range map[string]string{"grpc_addr": cfg.GRPCAddr, "http_addr": cfg.HTTPAddr, "admin_addr": cfg.AdminAddr,
		"terminate.addr": cfg.Terminate.Addr} {
		if path == "grpc_addr" && addr == "" {
			c.fail(path, "required: the ext_authz listener's host:port")
			continue
		}
		if addr != "" {
			if err := checkAddr(addr); err != nil {
				c.fail(path, "%v", err)
			}
		}
	}
	if _, err := authz.ParseProfile(cfg.DenyProfile); err != nil {
		c.fail("deny_profile", "unknown profile %q: use magicx, apikey, mythiq or openai", cfg.DenyProfile)
	}
	format, err := cfg.format()
	if err != nil {
		c.fail("key_prefix", "%v", err)
	}
	if _, err := cfg.logLevel(); err != nil {
		c.fail("log_level", "%v", unwrapField(err))
	}
	for path, d := range map[string]configDuration{
		"rotation_grace": cfg.RotationGrace, "shutdown_delay": cfg.ShutdownDelay, "shutdown_grace": cfg.ShutdownGrace,
		"cache.negative_ttl": cfg.Cache.NegativeTTL, "cache.stale_for": cfg.Cache.StaleFor,
	} {
		if d < 0 {
			c.fail(path, "must not be negative")
		}
	}
	for path, d := range map[string]configDuration{
		"usage_flush": cfg.UsageFlush, "tls.reload_interval": cfg.TLS.ReloadInterval, "cache.ttl": cfg.Cache.TTL,
		"cache.poll_interval": cfg.Cache.PollInterval, "rate_limits.redis.timeout": cfg.RateLimits.Redis.Timeout,
	} {
		if d <= 0 {
			c.fail(path, "must be positive, such as %s", defaultOf(path))
		}
	}
	if cfg.AuditRecent < 0 || cfg.AuditRecent > maxAuditRecent {
		c.fail("audit_recent", "want 0 (none kept) to %d events", maxAuditRecent)
	}
	if cfg.Cache.Size < 0 {
		c.fail("cache.size", "must not be negative")
	}
	if cfg.Cache.MissRate < 0 {
		c.fail("cache.miss_rate", "must not be negative")
	}
	if cfg.Cache.MissBurst < 0 {
		c.fail("cache.miss_burst", "must not be negative")
	}
	if cfg.Terminate.MaxBody < 0 {
		c.fail("terminate.max_body", "must not be negative")
	}
	if cfg.Terminate.Addr != "" {
		up, err := url.Parse(cfg.Terminate.Upstream)
		if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
			c.fail("terminate.upstream", "%q: want an http:// or https:// URL", cfg.Terminate.Upstream)
		}
		if cfg.Terminate.TLS == nil || cfg.Terminate.TLS.ClientCAFile == "" {
			c.fail("terminate.tls", "the terminator needs cert_file, key_file and client_ca_file: it always requires client certificates")
		}
	}
	for name, l := range map[string]*listenerTLS{"tls.grpc": cfg.TLS.GRPC, "tls.http": cfg.TLS.HTTP, "tls.admin": cfg.TLS.Admin,
		"terminate.tls": cfg.Terminate.TLS} {
		if l == nil {
			continue
		}
		if l.CertFile == "" || l.KeyFile == "" {
			c.fail(name, "cert_file and key_file are both required")
		}
		if l.Profile != "" && l.Profile != certs.ProfileDefault && l.Profile != certs.ProfileCNSA {
			c.fail(name+".profile", "unknown TLS profile %q: use default or cnsa", l.Profile)
		}
		if l.RequireClientCert && l.ClientCAFile == "" {
			c.fail(name+".require_client_cert", "needs client_ca_file")
		}
		if l.CRLFile != "" && l.ClientCAFile == "" {
			c.fail(name+".crl_file", "needs client_ca_file (the CRL's issuer)")
		}
	}
	cfg.Usage.checkValues(c)
	vaultURL := func(field, a string) {
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.fail(field, "%q: want http://host:port or https://host:port", a)
		}
	}
	if a := cfg.Vault.Address; a != "" {
		vaultURL("vault.address", a)
	}
	for i, a := range cfg.Vault.Addresses {
		vaultURL(fmt.Sprintf("vault.addresses[%d]", i), a)
	}
	if cfg.Vault.Address != "" && len(cfg.Vault.Addresses) > 0 {
		c.fail("vault.addresses", "set address or addresses, not both")
	}
	if err := vaultstore.CheckPath(cfg.Vault.Mount); err != nil {
		c.fail("vault.mount", "%v", err)
	}
	if err := vaultstore.CheckPath(cfg.Vault.Path); err != nil {
		c.fail("vault.path", "%v", err)
	}
	switch a := cfg.Vault.Auth; a.Method {
	case "", vaultstore.AuthToken:
	case vaultstore.AuthAppRole:
		if a.RoleIDFile == "" || a.SecretIDFile == "" {
			c.fail("vault.auth", "approle needs role_id_file and secret_id_file")
		}
	case vaultstore.AuthCert:
		if stdcmp.Or(cfg.Vault.TLS.ClientCert, os.Getenv("VAULT_CLIENT_CERT")) == "" {
			c.fail("vault.auth", "cert needs vault.tls.client_cert and client_key (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)")
		}
	default:
		c.fail("vault.auth.method", "unknown method %q: use token, approle or cert", a.Method)
	}
	// The policy and identity rules, one at a time so each problem names its entry.
	if err == nil {
		for i, r := range cfg.Policy.Routes {
			if _, err := authz.New(authz.Config{Format: format, Lookup: noLookup{}, Policy: authz.Policy{Routes: []authz.Route{r}}}); err != nil {
				c.fail(fmt.Sprintf("policy.routes[%d]", i), "%s", strings.Replace(err.Error(), "route 0", "route", 1))
			}
		}
		for i, r := range cfg.ClientCerts.IdentityRules {
			if _, err := authz.New(authz.Config{Format: format, Lookup: noLookup{}, IdentityRules: []authz.IdentityRule{r}}); err != nil {
				c.fail(fmt.Sprintf("client_certs.identity_rules[%d]", i), "%s", strings.Replace(err.Error(), "identity rule 0", "identity rule", 1))
			}
		}
	}
	cc := cfg.ClientCerts
	if cc.CAFile == "" && (cc.Require || len(cc.IdentityRules) > 0 || len(cc.TrustForwardedFrom) > 0 || cc.CRLFile != "") {
		c.fail("client_certs.ca_file", "required by require, identity_rules, trust_forwarded_from and crl_file")
	}
	for i, p := range cc.TrustForwardedFrom {
		if err := p.Validate(); err != nil {
			c.fail(fmt.Sprintf("client_certs.trust_forwarded_from[%d]", i), "%v", err)
		}
	}
	rl := cfg.RateLimits
	if rl.Backend != "local" && rl.Backend != "redis" {
		c.fail("rate_limits.backend", "unknown backend %q: use local or redis", rl.Backend)
	}
	if rl.Redis.OnFailure != "open" && rl.Redis.OnFailure != "closed" {
		c.fail("rate_limits.redis.on_failure", "unknown value %q: use closed or open", rl.Redis.OnFailure)
	}
	if rl.Backend == "redis" {
		switch rl.Redis.Mode {
		case "", "single":
			if err := checkAddr(rl.Redis.Address); err != nil {
				c.fail("rate_limits.redis.address", "%v", err)
			}
			if len(rl.Redis.Addresses) > 0 || rl.Redis.MasterName != "" {
				c.fail("rate_limits.redis.mode", "addresses and master_name need mode sentinel or cluster; mode single uses address")
			}
		case "sentinel", "cluster":
			if len(rl.Redis.Addresses) == 0 {
				c.fail("rate_limits.redis.addresses", "mode %s needs addresses", rl.Redis.Mode)
			}
			for i, a := range rl.Redis.Addresses {
				if err := checkAddr(a); err != nil {
					c.fail(fmt.Sprintf("rate_limits.redis.addresses[%d]", i), "%v", err)
				}
			}
			if rl.Redis.Mode == "sentinel" && rl.Redis.MasterName == "" {
				c.fail("rate_limits.redis.master_name", "mode sentinel needs the monitored master's name")
			}
		default:
			c.fail("rate_limits.redis.mode", "unknown mode %q: use single, sentinel or cluster", rl.Redis.Mode)
		}
	}
	if _, ok := rl.Plans[rl.DefaultPlan]; rl.DefaultPlan != "" && !ok {
		c.fail("rate_limits.default_plan", "plan %q is not defined under rate_limits.plans%s", rl.DefaultPlan, planHint(rl.Plans))
	}
	for name, p := range rl.Plans {
		if _, err := ratelimit.New(nil, map[string]ratelimit.Plan{name: p}, ""); err != nil {
			c.fail("rate_limits.plans."+name, "%s", strings.TrimPrefix(err.Error(), "ratelimit: "))
		}
	}
}

// planHint lists the plans a config defines, for messages.
func planHint(plans map[string]ratelimit.Plan) string {
	if len(plans) == 0 {
		return " (none is)"
	}
	names := make([]string, 0, len(plans))
	for n := range plans {
		names = append(names, n)
	}
	sort.Strings(names)
	return " (defined: " + strings.Join(names, ", ") + ")"
}

func defaultOf(path string) string {
	switch path {
	case "usage_flush":
		return "1m"
	case "tls.reload_interval":
		return "2s"
	case "cache.ttl":
		return "5m"
	case "cache.poll_interval":
		return "500ms"
	}
	return "100ms"
}

// unwrapField drops a "field: " prefix that the check adds back itself.
func unwrapField(err error) string {
	_, rest, ok := strings.Cut(err.Error(), ": ")
	if !ok {
		return err.Error()
	}
	return rest
}

// checkAddr accepts host:port with a numeric port.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port, such as 127.0.0.1:9001", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", addr)
	}
	_ = host
	return nil
}

// files reads every file the configuration names, as serve would.
func (c *checker) files() {
	cfg := c.cfg
	for name, l := range map[string]*listenerTLS{"tls.grpc": cfg.TLS.GRPC, "tls.http": cfg.TLS.HTTP, "tls.admin": cfg.TLS.Admin,
		"terminate.tls": cfg.Terminate.TLS} {
		if l == nil || l.CertFile == "" || l.KeyFile == "" {
			continue
		}
		if l.Profile != "" && l.Profile != certs.ProfileDefault && l.Profile != certs.ProfileCNSA {
			continue // reported already
		}
		if _, err := l.reloader(); err != nil {
			c.fail(name, "%s", strings.TrimPrefix(err.Error(), "certs: "))
		}
	}
	if cfg.ClientCerts.CAFile != "" {
		if _, err := cfg.clientCerts(); err != nil {
			path := "client_certs"
			if strings.HasPrefix(err.Error(), "client_certs.") {
				path, _, _ = strings.Cut(err.Error(), ":")
			}
			c.fail(path, "%s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), path+": "), "certs: "))
		}
	}
	t := cfg.Vault.TLS
	if t.CACert != "" {
		if b, err := os.ReadFile(t.CACert); err != nil {
			c.fail("vault.tls.ca_cert", "%v", err)
		} else if len(certs.ParseCertificates(b)) == 0 {
			c.fail("vault.tls.ca_cert", "%s holds no PEM certificate", t.CACert)
		}
	}
	if t.ClientCert != "" || t.ClientKey != "" {
		if t.ClientCert == "" || t.ClientKey == "" {
			c.fail("vault.tls", "client_cert and client_key go together")
		} else if _, err := tls.LoadX509KeyPair(t.ClientCert, t.ClientKey); err != nil {
			c.fail("vault.tls.client_cert", "%v", err)
		}
	}
	for path, f := range map[string]string{"vault.token_file": cfg.Vault.TokenFile, "vault.auth.role_id_file": cfg.Vault.Auth.RoleIDFile,
		"vault.auth.secret_id_file": cfg.Vault.Auth.SecretIDFile, "rate_limits.redis.password_file": cfg.RateLimits.Redis.PasswordFile} {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		switch {
		case err != nil:
			c.fail(path, "%v", err)
		case len(bytes.TrimSpace(b)) == 0:
			c.fail(path, "%s is empty", f)
		}
	}
	cfg.Usage.checkFiles(c)
	if a := cfg.AuditLog; a != "" && a != "stdout" {
		if st, err := os.Stat(filepath.Dir(a)); err != nil || !st.IsDir() {
			c.fail("audit_log", "directory %s does not exist", filepath.Dir(a))
		}
	}
}

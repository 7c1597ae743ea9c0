package authz

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/certs"
)

// Request is what the engine needs to know about one HTTP request. Adapters fill it from
// their own representation (an Envoy CheckRequest, an http.Request).
type Request struct {
	// Authorization is the Authorization header's value. Several occurrences are joined
	// with "," as HTTP merges them, which makes them malformed. Empty means absent.
	Authorization string
	// APIKey is the X-API-Key header's value, joined the same way. Empty means absent.
	APIKey string
	// RequestID is the request's x-request-id. The engine keeps it when it is 1 to 128
	// characters of [A-Za-z0-9._:+/=-] and holds no key prefix; otherwise it makes one up.
	RequestID string
	// Method, Host and Path (the request target, with any query) are matched against the
	// policy's routes in their canonical form (CanonicalMethod, CanonicalHost,
	// CanonicalPath).
	Method, Host, Path string
	// MethodOverride is an X-HTTP-Method-Override (or X-HTTP-Method, X-Method-Override)
	// header's value: frameworks that honour it route by it, so one that differs from
	// Method is refused when the policy has routes.
	MethodOverride string
	// ContentType is the Content-Type header's value: a form body's _method field is a
	// method override too (Rails, Laravel, Symfony).
	ContentType string
	// ForwardedHost is the X-Forwarded-Host header's value and Forwarded the Forwarded
	// header's (RFC 7239): frameworks behind a proxy route by the host they name, so
	// when the policy has host routes, one naming another host than Host is refused.
	ForwardedHost, Forwarded string
	// Body is the request body Envoy forwarded (with_request_body), for model routes;
	// BodyPartial says Envoy cut it at max_request_bytes.
	Body        []byte
	BodyPartial bool
	// Peer is the client certificate of the connection, as the adapter verified it.
	Peer Peer
	// Source is the client, for the store's fair miss budget; the zero Source: only
	// the shared budget applies.
	Source Source
}

// Peer is the client certificate a request came with.
type Peer struct {
	// Presented: the connection had a client certificate. Verified: it passed keygate's
	// own CA bundle, validity and CRL checks, and the fields below describe it.
	Presented, Verified bool
	SPIFFE, DNS         []string
	CommonName          string
	OrgUnits            []string
	Fingerprint         string // "sha256:" and the hex SHA-256 of the DER certificate
}

// VerifiedPeer is the Peer of a client certificate that certs.Verifier accepted as id.
func VerifiedPeer(id certs.Identity) Peer {
	return Peer{Presented: true, Verified: true, SPIFFE: id.SPIFFE, DNS: id.DNS, CommonName: id.CommonName,
		OrgUnits: id.OrgUnits, Fingerprint: id.Fingerprint}
}

// IdentityRule grants scopes to a verified client certificate, so that a service can
// authenticate by certificate alone. Every field that is set must match.
type IdentityRule struct {
	Name       string   `json:"name"`   // names the identity in headers and logs
	SPIFFE     string   `json:"spiffe"` // a SPIFFE ID; '*' matches one path segment
	DNS        string   `json:"dns"`    // a DNS SAN; "*.example.org" matches one label
	CommonName string   `json:"cn"`
	OrgUnit    string   `json:"ou"`
	Scopes     []string `json:"scopes"`
}

// Decision is the engine's answer for one request.
type Decision struct {
	Reason Reason
	// Record is the key's record when the key is known: on allow, and on revoked or
	// expired denials. Otherwise it is the zero Record.
	Record Record
	// KeyID and Owner name the presented key whenever its record was found (or the
	// certificate identity, as Record does), also when a denial clears Record (a key
	// bound to a certificate it came without): for the audit log, so that an owner sees
	// the refusals of its own keys. Empty for unknown keys.
	KeyID, Owner string
	// Denial is how to refuse the request; the zero Denial when allowed.
	Denial Denial
	// RequestID is the request's id, taken from the request or made up.
	RequestID string
	// Route is the policy route the request matched; nil when none did.
	Route *Route
	// Model is the body's model on a model route, once read; "" otherwise.
	Model string
}

// Allowed reports whether the request may proceed.
func (d *Decision) Allowed() bool { return d.Reason == ReasonAllowed }

// Config configures an Engine.
type Config struct {
	Format  Format    // key format; required
	Lookup  KeyLookup // key records by hash; required
	Profile Profile   // deny body profile; the zero value is ProfileMagicx
	// Realm is the realm of the WWW-Authenticate challenge on 401s; "" means "keygate".
	Realm string
	// Now returns the current time, for expiry checks; nil means time.Now.
	Now func() time.Time
	// Policy maps requests to required scopes and model checks; the zero Policy lets
	// every valid key through.
	Policy Policy
	// RequireClientCert denies every request without a verified client certificate
	// (routes may require one on their own).
	RequireClientCert bool
	// IdentityRules let verified client certificates in without a key.
	IdentityRules []IdentityRule
}

// Engine decides whether requests carry a valid key. It is safe for concurrent use.
type Engine struct {
	format Format
	lookup KeyLookup
	denier *denier
	now    func() time.Time
	policy Policy
	// hostRoutes: some route matches by host, so forwarded hosts are checked.
	hostRoutes bool
	mtls       bool
	rules      []IdentityRule
}

// New returns an Engine for cfg.
func New(cfg Config) (*Engine, error) {
	if cfg.Format.prefix == "" {
		return nil, fmt.Errorf("%w: no key format configured", ErrInvalidPrefix)
	}
	if cfg.Lookup == nil {
		return nil, errors.New("authz: no key lookup configured")
	}
	if cfg.Realm == "" {
		cfg.Realm = "keygate"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d, err := newDenier(cfg.Profile, cfg.Format.prefix, cfg.Realm)
	if err != nil {
		return nil, err
	}
	if err := cfg.Policy.validate(); err != nil {
		return nil, err
	}
	for i, r := range cfg.IdentityRules {
		if r.SPIFFE == "" && r.DNS == "" && r.CommonName == "" && r.OrgUnit == "" {
			return nil, fmt.Errorf("%w: identity rule %d (%s) matches every certificate", ErrInvalidPolicy, i, r.Name)
		}
		if r.Name == "" {
			return nil, fmt.Errorf("%w: identity rule %d has no name", ErrInvalidPolicy, i)
		}
		if err := ValidateScopes(r.Scopes); err != nil {
			return nil, fmt.Errorf("%w: identity rule %s: %w", ErrInvalidPolicy, r.Name, err)
		}
	}
	e := &Engine{format: cfg.Format, lookup: cfg.Lookup, denier: d, now: cfg.Now, policy: cfg.Policy,
		mtls: cfg.RequireClientCert, rules: cfg.IdentityRules}
	for _, r := range cfg.Policy.Routes {
		e.hostRoutes = e.hostRoutes || r.Host != ""
	}
	return e, nil
}

// Check decides req. A denial is a Decision, not an error. An unavailable or throttled
// store is a 503 denial; the error is non-nil only when no decision could be made at all
// (the store failed in a way it does not classify, such as a corrupt record).
//
// When the policy has routes, a request whose method, host or path servers could read
// in more than one way (see CanonicalPath) is refused with a 400 (invalid_request)
// before anything else.
func (e *Engine) Check(ctx context.Context, req *Request) (Decision, error) {
	return e.check(ctx, req, true)
}

// Authenticate decides req on its credentials alone: the key (or an identity rule's
// certificate) and the client-certificate requirements that do not depend on a route.
// The policy's routes are not applied; callers that authorize by other means (the admin
// API, by scope) use it.
func (e *Engine) Authenticate(ctx context.Context, req *Request) (Decision, error) {
	return e.check(ctx, req, false)
}

// NeedsBody reports whether the check of a request to method, host and path with a body
// of contentType reads the body: on a route that checks the body's model, and for a form
// body (whose _method field may override the method) when the policy has routes. A proxy
// reads the body before deciding only then.
func (e *Engine) NeedsBody(method, host, path, contentType string) bool {
	if len(e.policy.Routes) == 0 {
		return false
	}
	if formKind(contentType) != formNone {
		return true
	}
	r, _, err := e.route(&Request{Method: method, Host: host, Path: path})
	return err == nil && r != nil && r.Models
}

// route returns the policy route for req in its canonical form, and the canonical
// method, or an error wrapping ErrAmbiguousRequest.
func (e *Engine) route(req *Request) (*Route, string, error) {
	method, err := CanonicalMethod(req.Method)
	if err != nil {
		return nil, "", err
	}
	if o := trimOWS(req.MethodOverride); o != "" && !strings.EqualFold(o, method) {
		return nil, "", errMethodOverride
	}
	if _, q, ok := strings.Cut(req.Path, "?"); ok && overridden(q, method) {
		return nil, "", errMethodOverride
	}
	if req.ContentType != "" && bodyOverridden(req.ContentType, req.Body, method) {
		return nil, "", errMethodOverride
	}
	host, err := CanonicalHost(req.Host)
	if err != nil {
		return nil, "", err
	}
	if e.hostRoutes && (req.ForwardedHost != "" || req.Forwarded != "") && !sameForwardedHost(host, req.ForwardedHost, req.Forwarded) {
		return nil, "", errForwardedHost
	}
	path, err := CanonicalPath(req.Path)
	if err != nil {
		return nil, "", err
	}
	return e.policy.match(method, host, path), method, nil
}

func (e *Engine) check(ctx context.Context, req *Request, withPolicy bool) (Decision, error) {
	d := Decision{RequestID: req.RequestID}
	if !validRequestID(d.RequestID, e.format.prefix) {
		d.RequestID = NewRequestID()
	}
	method := req.Method
	if withPolicy && len(e.policy.Routes) > 0 {
		var err error
		if d.Route, method, err = e.route(req); err != nil {
			return e.deny(d, ReasonBadRequest), nil
		}
	}
	switch {
	case req.Peer.Presented && !req.Peer.Verified:
		// A certificate keygate cannot verify (foreign CA, expired, revoked) is refused
		// even where none is required: a misconfigured Envoy must not open the door.
		return e.deny(d, ReasonClientCertInvalid), nil
	case !req.Peer.Verified && (e.mtls || d.Route != nil && d.Route.RequireClientCert):
		return e.deny(d, ReasonClientCertRequired), nil
	}
	key, reason := e.credential(req)
	if reason == ReasonMissing && req.Peer.Verified {
		if rule := e.identity(&req.Peer); rule != nil {
			d.Record = Record{ID: "cert:" + rule.Name, Name: rule.Name, Owner: req.Peer.Fingerprint,
				Kind: KindCertificate, Scopes: rule.Scopes}
			d.KeyID, d.Owner = d.Record.ID, d.Record.Owner
			d.Reason = ReasonAllowed
			return e.authorize(d, req, method, withPolicy), nil
		}
	}
	if reason != ReasonAllowed {
		return e.deny(d, reason), nil
	}
	hash := HashKey(key)
	rec, err := lookupFrom(ctx, e.lookup, hash, req.Source)
	switch refused := refusedSource(err); {
	case refused != nil:
		return e.RateLimited(d, refused.RetryAfter), nil
	case errors.Is(err, ErrKeyNotFound):
		return e.deny(d, ReasonUnknownKey), nil
	case errors.Is(err, ErrStoreUnavailable):
		return e.deny(d, ReasonUnavailable), nil
	case errors.Is(err, ErrLookupThrottled):
		return e.deny(d, ReasonThrottled), nil
	case err != nil:
		return d, fmt.Errorf("key lookup: %w", err)
	case subtle.ConstantTimeCompare(rec.Hash[:], hash[:]) != 1:
		// A store must never hand back another key's record; treat it as unknown.
		return e.deny(d, ReasonUnknownKey), nil
	}
	d.Record = rec
	d.KeyID, d.Owner = rec.ID, rec.Owner
	switch rec.StatusAt(e.now()) {
	case StatusRevoked:
		return e.deny(d, ReasonRevoked), nil
	case StatusExpired:
		return e.deny(d, ReasonExpired), nil
	}
	if rec.BoundCert != "" && !req.Peer.holds(rec.BoundCert) {
		// A certificate-bound key (RFC 8705's idea) is worthless without its certificate.
		d.Record = Record{}
		return e.deny(d, ReasonCertMismatch), nil
	}
	d.Reason = ReasonAllowed
	return e.authorize(d, req, method, withPolicy), nil
}

// holds reports whether the verified peer is the certificate a key is bound to: its
// SHA-256 fingerprint, or one of its SPIFFE IDs.
func (p *Peer) holds(bound string) bool {
	if !p.Verified {
		return false
	}
	if strings.HasPrefix(bound, "sha256:") {
		return subtle.ConstantTimeCompare([]byte(strings.ToLower(bound)), []byte(p.Fingerprint)) == 1
	}
	return slices.Contains(p.SPIFFE, bound)
}

// identity returns the first rule the verified peer matches, or nil.
func (e *Engine) identity(p *Peer) *IdentityRule {
	for i := range e.rules {
		r := &e.rules[i]
		switch {
		case r.SPIFFE != "" && !slices.ContainsFunc(p.SPIFFE, func(id string) bool { return certs.MatchSPIFFE(r.SPIFFE, id) }),
			r.DNS != "" && !slices.ContainsFunc(p.DNS, func(n string) bool { return dnsMatch(r.DNS, n) }),
			r.CommonName != "" && r.CommonName != p.CommonName,
			r.OrgUnit != "" && !slices.Contains(p.OrgUnits, r.OrgUnit):
			continue
		}
		return r
	}
	return nil
}

// dnsMatch matches a DNS name against a name or a "*." wildcard of one label.
func dnsMatch(pattern, name string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, domain, found := strings.Cut(name, ".")
		return found && label != "" && strings.EqualFold(domain, rest)
	}
	return strings.EqualFold(pattern, name)
}

// authorize applies the policy to a request with a valid key: the route's scope, then
// its model allow-list. method is the request's canonical method.
func (e *Engine) authorize(d Decision, req *Request, method string, withPolicy bool) Decision {
	if !withPolicy {
		return d
	}
	r := d.Route
	switch {
	case r == nil && e.policy.denyUnmatched():
		d.Reason, d.Denial = ReasonNoRoute, e.denier.static[ReasonNoRoute]
		return d
	case r == nil:
		return d
	case !Grants(d.Record.Scopes, r, method):
		required := r.Scope
		if required == "" {
			required = ScopeWebhook
		}
		return e.Forbid(d, required)
	case !r.Models:
		return d
	}
	model, err := ModelOf(req.Body, req.BodyPartial)
	d.Model = model
	switch {
	case err != nil:
		d.Reason, d.Denial = ReasonBadBody, e.denier.static[ReasonBadBody]
	case len(d.Record.Models) > 0 && !modelAllowed(d.Record.Models, model):
		a := argsOf(&d.Record)
		a.model = model
		d.Reason = ReasonModelNotAllowed
		d.Denial = e.denier.with(ReasonModelNotAllowed, a)
	}
	return d
}

// Forbid turns an allowed decision into a 403: the key is valid but lacks the scope
// required, named in the body where the profile documents it.
func (e *Engine) Forbid(d Decision, required string) Decision {
	d.Reason = ReasonInsufficientScope
	a := argsOf(&d.Record)
	a.required = required
	d.Denial = e.denier.with(ReasonInsufficientScope, a)
	return d
}

// RateLimited turns an allowed decision into a 429 asking the client to wait
// retryAfter (whole seconds, at least 1).
func (e *Engine) RateLimited(d Decision, retryAfter time.Duration) Decision {
	secs := int((retryAfter + time.Second - 1) / time.Second)
	d.Reason = ReasonRateLimited
	d.Denial = e.denier.with(ReasonRateLimited, bodyArgs{retry: max(secs, 1)})
	return d
}

// LimiterUnavailable turns an allowed decision into a 503: the shared rate limiter
// cannot answer and the configuration fails closed.
func (e *Engine) LimiterUnavailable(d Decision) Decision {
	return e.deny(d, ReasonLimiterUnavailable)
}

func (e *Engine) deny(d Decision, r Reason) Decision {
	d.Reason = r
	d.Denial = e.denier.deny(r, &d.Record)
	if r != ReasonRevoked && r != ReasonExpired {
		d.Record = Record{}
	}
	return d
}

// credential extracts the one key a request presents, or says why it has none. It
// never consults the store: format and checksum errors are settled here.
func (e *Engine) credential(req *Request) (string, Reason) {
	auth := trimOWS(req.Authorization)
	apiKey := trimOWS(req.APIKey)
	if auth == "" && apiKey == "" {
		return "", ReasonMissing
	}
	var key string
	if auth != "" {
		scheme, token, ok := cutScheme(auth)
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return "", ReasonMalformed
		}
		key = token
	}
	if apiKey != "" {
		if key != "" && key != apiKey {
			return "", ReasonMalformed // two different keys in one request
		}
		key = apiKey
	}
	switch e.format.check(key) {
	case keyMalformed:
		return "", ReasonMalformed
	case keyBadChecksum:
		return "", ReasonBadChecksum
	}
	return key, ReasonAllowed
}

// cutScheme splits "Scheme SP token" at the first run of spaces or tabs.
func cutScheme(v string) (scheme, token string, ok bool) {
	i := strings.IndexAny(v, " \t")
	if i <= 0 {
		return "", "", false
	}
	token = trimOWS(v[i:])
	return v[:i], token, token != ""
}

// trimOWS trims HTTP optional whitespace (spaces and tabs) from both ends.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// maxRequestID bounds the request ids keygate keeps; longer ones are replaced.
const maxRequestID = 128

// validRequestID reports whether a client's or Envoy's request id may be kept: it goes
// into logs, the audit log and headers, so it must be short, plain, and never a key.
func validRequestID(id, keyPrefix string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return !strings.Contains(id, keyPrefix)
}

// NewRequestID returns a fresh request id, "req_" and 32 hex digits. It is a correlation
// id, not a secret.
func NewRequestID() string {
	const hexdigits = "0123456789abcdef"
	var b [4 + 32]byte
	copy(b[:], "req_")
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 16; i++ {
		b[4+i] = hexdigits[hi>>(60-4*i)&0xf]
		b[20+i] = hexdigits[lo>>(60-4*i)&0xf]
	}
	return string(b[:])
}

// refusedSource is err's SourceRefusedError, or nil. Without an error it returns
// before the variable errors.As needs is made, so a found key allocates nothing.
func refusedSource(err error) *SourceRefusedError {
	if err == nil {
		return nil
	}
	var refused *SourceRefusedError
	if errors.As(err, &refused) {
		return refused
	}
	return nil
}

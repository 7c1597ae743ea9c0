package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Permission levels (the generic key API's): scopes that grant by HTTP method rather than
// by route.
const (
	ScopeRead    = "read"    // safe methods (GET, HEAD, OPTIONS) on any non-webhook route
	ScopeWrite   = "write"   // read, plus POST, PUT and PATCH, on any non-webhook route
	ScopeAdmin   = "admin"   // everything
	ScopeWebhook = "webhook" // webhook routes only
)

// ErrInvalidPolicy is returned by New for a route it cannot use.
var ErrInvalidPolicy = errors.New("invalid policy")

// Route says which scope requests need. A route matches a request when its method, host
// and path match; at most one of Path, Prefix and Pattern is set (none: every path).
type Route struct {
	Name    string   `json:"name"`    // for logs and metrics
	Methods []string `json:"methods"` // any case; GET covers HEAD; empty: any method
	Host    string   `json:"host"`    // exact, case-insensitive, without port or trailing dot; empty: any host
	Path    string   `json:"path"`    // the exact path, with or without a trailing slash (the query string is ignored)
	Prefix  string   `json:"prefix"`  // whole leading segments: /v1/images covers /v1/images and /v1/images/x, not /v1/imagesx
	Pattern string   `json:"pattern"` // a path where '*' matches one segment, e.g. /v1/models/*
	Scope   string   `json:"scope"`   // the scope a key needs; empty: any valid key
	// Models makes the JSON body's "model" subject to the key's model allow-list.
	Models bool `json:"models"`
	// Webhook marks a webhook route: the webhook permission reaches only these.
	Webhook bool `json:"webhook"`
	// RequireClientCert denies requests to the route without a verified client
	// certificate, even with a valid key.
	RequireClientCert bool `json:"require_client_cert"`
}

// Policy maps requests to the scopes they need. Routes match the canonical form of a
// request (CanonicalPath, CanonicalMethod, CanonicalHost), so encodings, dot segments,
// doubled slashes, ';' parameters, a trailing slash, letter case or a trailing dot in the
// host cannot take a request past the route it belongs to.
type Policy struct {
	Routes []Route `json:"routes"` // first match wins
	// DenyUnmatched denies requests that no route matches with a 403 (no_route); false
	// lets any valid key make them. nil (unset) means true when there are routes: a
	// request the policy does not know is refused.
	DenyUnmatched *bool `json:"deny_unmatched"`
}

// denyUnmatched is DenyUnmatched with its default applied.
func (p *Policy) denyUnmatched() bool {
	if p.DenyUnmatched != nil {
		return *p.DenyUnmatched
	}
	return len(p.Routes) > 0
}

func (p *Policy) validate() error {
	for i := range p.Routes {
		r := &p.Routes[i]
		set := 0
		for _, s := range []*string{&r.Path, &r.Prefix, &r.Pattern} {
			if *s == "" {
				continue
			}
			set++
			if (*s)[0] != '/' {
				return fmt.Errorf("%w: route %d (%s): paths start with '/'", ErrInvalidPolicy, i, r.Name)
			}
			// Routes are written in the form requests are matched in.
			c, err := CanonicalPath(*s)
			if err != nil || strings.ContainsAny(*s, "?#") {
				return fmt.Errorf("%w: route %d (%s): path %q is not a plain path (%v)", ErrInvalidPolicy, i, r.Name, *s, err)
			}
			*s = c
		}
		if set > 1 {
			return fmt.Errorf("%w: route %d (%s): set one of path, prefix and pattern", ErrInvalidPolicy, i, r.Name)
		}
		for j, m := range r.Methods {
			c, err := CanonicalMethod(m)
			if err != nil {
				return fmt.Errorf("%w: route %d (%s): method %q", ErrInvalidPolicy, i, r.Name, m)
			}
			r.Methods[j] = c
		}
		if r.Host != "" {
			h, err := CanonicalHost(r.Host)
			if err != nil || h == "" {
				return fmt.Errorf("%w: route %d (%s): host %q", ErrInvalidPolicy, i, r.Name, r.Host)
			}
			r.Host = h
		}
		if r.Scope != "" {
			if err := ValidateScopes([]string{r.Scope}); err != nil {
				return fmt.Errorf("%w: route %d (%s): %w", ErrInvalidPolicy, i, r.Name, err)
			}
		}
		if r.Name == "" {
			r.Name = fmt.Sprintf("route-%d", i)
		}
	}
	return nil
}

// match returns the first route for a request in canonical form (CanonicalMethod,
// CanonicalHost, CanonicalPath), or nil. Paths and hosts compare without regard to ASCII
// case, as case-insensitive upstream routers would; a GET route also takes HEAD, which
// every server answers like GET.
func (p *Policy) match(method, host, path string) *Route {
	for i := range p.Routes {
		r := &p.Routes[i]
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) &&
			!(method == "HEAD" && slices.Contains(r.Methods, "GET")) {
			continue
		}
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		switch {
		case r.Path != "" && !strings.EqualFold(path, r.Path),
			r.Prefix != "" && !prefixMatch(r.Prefix, path),
			r.Pattern != "" && !patternMatch(r.Pattern, path):
			continue
		}
		return r
	}
	return nil
}

// prefixMatch reports whether the canonical prefix is made of path's leading segments.
func prefixMatch(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	return len(path) >= len(prefix) && strings.EqualFold(path[:len(prefix)], prefix) &&
		(len(path) == len(prefix) || path[len(prefix)] == '/')
}

// patternMatch matches path against a pattern whose '*' segments match any one segment.
func patternMatch(pattern, path string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		seg, rest, more := strings.Cut(path, "/")
		if pmore != more || (pseg != "*" && !strings.EqualFold(pseg, seg)) || (pseg == "*" && seg == "") {
			return false
		}
		if !more {
			return true
		}
		pattern, path = prest, rest
	}
}

// Grants reports whether a key with scopes may make a request with method on route r.
// A route without a scope takes any valid key (a webhook route, any key with the webhook
// permission). Otherwise a key scope grants when it is "admin", equals the route's
// scope, or is a wildcard covering it ("chat:*" covers "chat:completions", "*" covers
// all); "read" and "write" grant by method on every route but webhook routes, and
// "webhook" grants webhook routes.
func Grants(scopes []string, r *Route, method string) bool {
	if r.Scope == "" && !r.Webhook {
		return true
	}
	safe := method == "GET" || method == "HEAD" || method == "OPTIONS"
	for _, s := range scopes {
		switch {
		case s == ScopeAdmin, scopeCovers(s, r.Scope):
			return true
		case r.Webhook:
			if s == ScopeWebhook {
				return true
			}
		case s == ScopeRead && safe,
			s == ScopeWrite && (safe || method == "POST" || method == "PUT" || method == "PATCH"):
			return true
		}
	}
	return false
}

// scopeCovers reports whether the key scope s grants the required scope.
func scopeCovers(s, required string) bool {
	if required == "" {
		return false
	}
	if s == required {
		return true
	}
	prefix, ok := strings.CutSuffix(s, "*")
	return ok && strings.HasPrefix(required, prefix)
}

// modelAllowed reports whether model is on the allow-list; entries may end in '*'.
func modelAllowed(allow []string, model string) bool {
	for _, a := range allow {
		if a == model {
			return true
		}
		if prefix, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(model, prefix) {
			return true
		}
	}
	return false
}

// Errors of ModelOf.
var (
	ErrBodyNotJSON     = errors.New("the body is not a JSON object")
	ErrNoModel         = errors.New(`the body has no "model" string`)
	ErrDuplicateModel  = errors.New(`the body has more than one "model"`)
	ErrBodyIncomplete  = errors.New("the body was cut short before it could be checked")
	errModelTooLong    = errors.New(`the "model" is longer than 256 bytes`)
	maxModelLen        = 256
	errUnexpectedToken = errors.New("unexpected JSON token")
)

// ModelOf returns the top-level "model" string of a JSON object body. It reads the
// object's tokens without building values (escapes in keys are decoded, so
// "mod\u0065l" is "model"), refuses a second "model" or a "Model" in any other case
// (parsers differ on which one wins), and with partial set (Envoy cut the body at
// max_request_bytes) refuses a body that ends before the object does.
func ModelOf(body []byte, partial bool) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	incomplete := func(err error) error {
		if partial && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
			return ErrBodyIncomplete
		}
		return fmt.Errorf("%w: %w", ErrBodyNotJSON, err)
	}
	if t, err := dec.Token(); err != nil {
		return "", incomplete(err)
	} else if t != json.Delim('{') {
		return "", ErrBodyNotJSON
	}
	model, found := "", false
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return "", incomplete(err)
		}
		key, _ := k.(string)
		if !strings.EqualFold(key, "model") {
			if err := skipValue(dec); err != nil {
				return "", incomplete(err)
			}
			continue
		}
		// "Model" or "MODEL" beside "model" is as ambiguous as two "model"s: some
		// parsers match keys without regard to case.
		if found || key != "model" {
			return "", ErrDuplicateModel
		}
		v, err := dec.Token()
		if err != nil {
			return "", incomplete(err)
		}
		s, ok := v.(string)
		if !ok || s == "" {
			return "", ErrNoModel
		}
		if len(s) > maxModelLen {
			return "", errModelTooLong
		}
		model, found = s, true
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return "", incomplete(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", fmt.Errorf("%w: data after the object", ErrBodyNotJSON)
	}
	if !found {
		return "", ErrNoModel
	}
	return model, nil
}

// skipValue consumes one JSON value of any depth.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
			if depth < 0 {
				return errUnexpectedToken
			}
		}
		if depth == 0 {
			return nil
		}
	}
}

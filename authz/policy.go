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
	Methods []string `json:"methods"` // upper case; empty: any method
	Host    string   `json:"host"`    // exact, case-insensitive, without port; empty: any host
	Path    string   `json:"path"`    // the exact path (the query string is ignored)
	Prefix  string   `json:"prefix"`  // a path prefix
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

// Policy maps requests to the scopes they need.
type Policy struct {
	Routes []Route `json:"routes"` // first match wins
	// DenyUnmatched denies requests that no route matches; otherwise any valid key may
	// make them.
	DenyUnmatched bool `json:"deny_unmatched"`
}

func (p *Policy) validate() error {
	for i := range p.Routes {
		r := &p.Routes[i]
		set := 0
		for _, s := range []string{r.Path, r.Prefix, r.Pattern} {
			if s != "" {
				set++
				if s[0] != '/' {
					return fmt.Errorf("%w: route %d (%s): paths start with '/'", ErrInvalidPolicy, i, r.Name)
				}
			}
		}
		if set > 1 {
			return fmt.Errorf("%w: route %d (%s): set one of path, prefix and pattern", ErrInvalidPolicy, i, r.Name)
		}
		for j, m := range r.Methods {
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " /") {
				return fmt.Errorf("%w: route %d (%s): method %q", ErrInvalidPolicy, i, r.Name, m)
			}
			r.Methods[j] = m
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

// match returns the first route for the request, or nil.
func (p *Policy) match(method, host, path string) *Route {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	for i := range p.Routes {
		r := &p.Routes[i]
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
			continue
		}
		if r.Host != "" && !strings.EqualFold(r.Host, host) {
			continue
		}
		switch {
		case r.Path != "" && path != r.Path,
			r.Prefix != "" && !strings.HasPrefix(path, r.Prefix),
			r.Pattern != "" && !patternMatch(r.Pattern, path):
			continue
		}
		return r
	}
	return nil
}

// patternMatch matches path against a pattern whose '*' segments match any one segment.
func patternMatch(pattern, path string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		seg, rest, more := strings.Cut(path, "/")
		if pmore != more || (pseg != "*" && pseg != seg) || (pseg == "*" && seg == "") {
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

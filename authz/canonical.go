package authz

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// ErrAmbiguousRequest is returned for a request keygate refuses to guess about: a path,
// method or host that upstream servers could read in more than one way.
var ErrAmbiguousRequest = errors.New("ambiguous request")

// Errors of CanonicalPath and NormalizeTarget, each wrapping ErrAmbiguousRequest.
var (
	errNotOrigin      = ambiguous("the path does not start with '/'")
	errEncodedSlash   = ambiguous("an encoded slash or backslash (%2F, %5C) in the path")
	errBackslash      = ambiguous("a backslash in the path")
	errBadEscape      = ambiguous("a malformed percent-escape in the path")
	errDoubleEncoded  = ambiguous("a double-encoded escape (%25 and two hex digits) in the path")
	errControl        = ambiguous("a control character, space or NUL in the path")
	errInvalidUTF8    = ambiguous("the path is not valid UTF-8")
	errFragment       = ambiguous("a fragment ('#') in the request target")
	errParamDot       = ambiguous("a dot or empty segment with ';' parameters")
	errDotLike        = ambiguous("a segment that NFKC makes '.' or '..' (such as U+2025)")
	errPathTooLong    = ambiguous("the path is longer than 8192 bytes")
	errBadMethod      = ambiguous("the method is not an HTTP token")
	errMethodOverride = ambiguous("a method override that differs from the method")
	errBadHost        = ambiguous("whitespace, a control character or a separator in the host")
	errForwardedHost  = ambiguous("X-Forwarded-Host or Forwarded names another host than the request's")
)

func ambiguous(msg string) error { return &ambiguousError{msg} }

type ambiguousError struct{ msg string }

func (e *ambiguousError) Error() string { return "ambiguous request: " + e.msg }
func (e *ambiguousError) Unwrap() error { return ErrAmbiguousRequest }

// maxPath bounds the paths keygate canonicalizes; Envoy's default header limit is 60 KiB,
// but no API route needs more than this.
const maxPath = 8192

// CanonicalPath returns the form of a request target's path that the policy matches: the
// query is dropped; every percent-escape is decoded once; ';' parameters are removed from
// each segment (as Tomcat, Jetty and Spring do before routing); empty segments are merged
// ('//' is '/'); '.' and '..' segments are removed (RFC 3986 §5.2.4, after decoding, so
// %2e%2e is '..'); a trailing slash is dropped; segments with characters beyond ASCII are
// put in Unicode NFKC form (so a full-width 'ｃ' is 'c'). Letter case is kept: the policy
// compares paths without regard to ASCII case.
//
// A target that servers could read differently is refused with an error wrapping
// ErrAmbiguousRequest: one not starting with '/', an encoded slash or backslash
// (%2F, %5C, or one that NFKC makes), a raw backslash, a malformed escape, a double-encoded
// escape (%25 followed by two hex digits), a control character, space or NUL, invalid
// UTF-8, a fragment, a '.', '..' or empty segment carrying ';' parameters ("..;/"), a
// segment that NFKC makes '.' or '..' ("‥", "．．"), and a path longer than 8 KiB.
//
// A path already in canonical form is returned as is, without allocating.
func CanonicalPath(target string) (string, error) {
	path := target
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if len(path) > maxPath {
		return "", errPathTooLong
	}
	if path == "" || path[0] != '/' {
		return "", errNotOrigin
	}
	if plainPath(path) {
		return path, nil
	}
	segs, err := segments(path, true)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(path))
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if b.Len() == 0 {
		return "/", nil
	}
	return b.String(), nil
}

// NormalizeTarget returns the request target a proxy should send upstream, as Envoy's
// normalize_path and merge_slashes make it: escapes of unreserved characters decoded and
// the others upper-cased (RFC 3986 §6.2.2), '.' and '..' segments removed, empty segments
// merged, the query kept. ';' parameters and a trailing slash are left as they are. It
// refuses what CanonicalPath refuses.
func NormalizeTarget(target string) (string, error) {
	path, query, hasQuery := strings.Cut(target, "?")
	if len(path) > maxPath {
		return "", errPathTooLong
	}
	if path == "" || path[0] != '/' {
		return "", errNotOrigin
	}
	if _, err := CanonicalPath(path); err != nil {
		return "", err
	}
	if strings.IndexByte(query, '#') >= 0 {
		return "", errFragment
	}
	if plainPath(path) { // nothing to decode, remove or merge
		return target, nil
	}
	segs, err := segments(path, false)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(target))
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if b.Len() == 0 || (len(segs) > 0 && strings.HasSuffix(path, "/")) {
		b.WriteByte('/')
	}
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(query)
	}
	return b.String(), nil
}

// plainPath reports whether path is canonical as it stands: only unreserved characters
// and a few sub-delimiters, no empty, '.' or '..' segment, no trailing slash.
func plainPath(path string) bool {
	if path == "/" {
		return true
	}
	if path[len(path)-1] == '/' {
		return false
	}
	segStart := true
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '/':
			if segStart && i > 0 {
				return false // an empty segment
			}
			segStart = true
			continue
		case c == '.':
			if segStart {
				return false // a segment starting with '.' may be a dot segment: take the slow path
			}
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '_', c == '~', c == ':', c == '@', c == '!', c == '$', c == '&',
			c == '\'', c == '(', c == ')', c == '*', c == '+', c == ',', c == '=':
		default:
			return false // '%', ';', '\\', '#', controls, spaces, non-ASCII
		}
		segStart = false
	}
	return true
}

// segments splits an origin-form path into its segments after dot-segment removal and
// slash merging. With decode, each segment is fully percent-decoded, stripped of ';'
// parameters and NFKC-normalized (the matching form); otherwise only escapes of unreserved
// characters are decoded (the form to forward).
func segments(path string, decode bool) ([]string, error) {
	var out []string
	for rest := path[1:]; ; {
		seg, next, more := strings.Cut(rest, "/")
		name, hasParams := seg, false
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			name, hasParams = seg[:i], true
		}
		dec, err := decodeSegment(name)
		if err != nil {
			return nil, err
		}
		switch {
		case hasParams && (dec == "" || dec == "." || dec == ".."):
			return nil, errParamDot
		case dec == "", dec == ".":
		case dec == "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case decode:
			out = append(out, dec)
		default:
			out = append(out, normalizeEscapes(seg))
		}
		if !more {
			return out, nil
		}
		rest = next
	}
}

// decodeSegment percent-decodes one segment (without its parameters), refusing what is
// ambiguous, and puts a segment with characters beyond ASCII in NFKC form.
func decodeSegment(s string) (string, error) {
	ascii := true
	needs := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x21 || c == 0x7f:
			return "", errControl
		case c == '\\':
			return "", errBackslash
		case c == '#':
			return "", errFragment
		case c == '%':
			needs = true
		case c >= 0x80:
			ascii = false
		}
	}
	out := s
	if needs {
		b := make([]byte, 0, len(s))
		for i := 0; i < len(s); i++ {
			c := s[i]
			if c != '%' {
				b = append(b, c)
				continue
			}
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", errBadEscape
			}
			v := unhex(s[i+1])<<4 | unhex(s[i+2])
			switch {
			case v == '/', v == '\\':
				return "", errEncodedSlash
			case v < 0x20 || v == 0x7f:
				return "", errControl
			case v == '%' && i+4 < len(s) && isHex(s[i+3]) && isHex(s[i+4]):
				return "", errDoubleEncoded
			case v >= 0x80:
				ascii = false
			}
			b = append(b, v)
			i += 2
		}
		out = string(b)
	}
	if ascii {
		return out, nil
	}
	if !utf8.ValidString(out) {
		return "", errInvalidUTF8
	}
	out = norm.NFKC.String(out)
	if out == "." || out == ".." {
		// No upstream applies NFKC: it routes "‥" as a name, not as a dot segment.
		return "", errDotLike
	}
	if strings.ContainsAny(out, "/\\") {
		return "", errEncodedSlash
	}
	for _, r := range out {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return "", errControl
		}
	}
	return out, nil
}

// normalizeEscapes decodes the escapes of unreserved characters in a raw segment and
// upper-cases the hex digits of the others. decodeSegment has already vetted it.
func normalizeEscapes(seg string) string {
	if strings.IndexByte(seg, '%') < 0 {
		return seg
	}
	b := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' || i+2 >= len(seg) {
			b = append(b, c)
			continue
		}
		v := unhex(seg[i+1])<<4 | unhex(seg[i+2])
		if unreserved(v) {
			b = append(b, v)
		} else {
			b = append(b, '%', upperHex(seg[i+1]), upperHex(seg[i+2]))
		}
		i += 2
	}
	return string(b)
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// CanonicalMethod returns the method in upper case, as the policy matches it: some
// frameworks (Werkzeug, for one) upper-case the method before routing, so "post" must be
// judged as POST. A method that is not an HTTP token is refused.
func CanonicalMethod(m string) (string, error) {
	if m == "" {
		return "", errBadMethod
	}
	lower := false
	for i := 0; i < len(m); i++ {
		c := m[i]
		switch {
		case 'a' <= c && c <= 'z':
			lower = true
		case 'A' <= c && c <= 'Z', '0' <= c && c <= '9', strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return "", errBadMethod
		}
	}
	if lower {
		return strings.ToUpper(m), nil
	}
	return m, nil
}

// CanonicalHost returns the host as the policy matches it: without its port and without a
// trailing dot ("admin.example.com." names the same host). Whitespace, control characters
// and separators no host holds ('/', '\\', '@', ',', ';') are refused. Case is kept; the
// policy compares hosts without regard to case.
func CanonicalHost(h string) (string, error) {
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c <= 0x20 || c == 0x7f || c == '/' || c == '\\' || c == '@' || c == ',' || c == ';' {
			return "", errBadHost
		}
	}
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[:i+1], nil
		}
		return "", errBadHost
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, "."), nil
}

// overridden reports whether a form-encoded parameter list (a query string or an
// application/x-www-form-urlencoded body) carries a _method parameter naming another
// method than method: Rails (Rack::MethodOverride), Laravel and Symfony run a POST as the
// method it names. Every occurrence counts (PHP keeps the last, Rack the first); names
// are read as those frameworks decode them: percent-decoded, '+' as space, and (as PHP
// does) '.', ' ' and '[' as '_'. A value that cannot be decoded differs from any method.
func overridden(params, method string) bool {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, "&")
		name, value, _ := strings.Cut(p, "=")
		if len(name) < len("_method") || len(name) > 3*len("_method")+2 {
			continue
		}
		if n, err := url.QueryUnescape(name); err == nil {
			name = n
		}
		name = strings.Map(func(r rune) rune {
			if r == '.' || r == ' ' || r == '[' {
				return '_'
			}
			return r
		}, strings.TrimSpace(name))
		if !strings.EqualFold(name, "_method") {
			continue
		}
		v, err := url.QueryUnescape(value)
		if err != nil || !strings.EqualFold(strings.TrimSpace(v), method) {
			return true
		}
	}
	return false
}

// Form bodies, whose _method parameter some frameworks read as the request's method.
const (
	formNone = iota
	formURLEncoded
	formMultipart
)

// formKind returns the kind of form a Content-Type names; of repeated ones (joined with
// ','), the first form any of them names.
func formKind(contentType string) int {
	for contentType != "" {
		var ct string
		ct, contentType, _ = strings.Cut(contentType, ",")
		mt, _, _ := strings.Cut(ct, ";")
		mt = strings.TrimSpace(mt)
		switch {
		case strings.EqualFold(mt, "application/x-www-form-urlencoded"):
			return formURLEncoded
		case strings.EqualFold(mt, "multipart/form-data"):
			return formMultipart
		}
	}
	return formNone
}

// bodyOverridden reports whether a form body may name another method than method in a
// _method field. A multipart body with a part of that name is refused whatever it holds.
func bodyOverridden(contentType string, body []byte, method string) bool {
	switch formKind(contentType) {
	case formURLEncoded:
		return overridden(strings.TrimSpace(string(body)), method)
	case formMultipart:
		lower := bytes.ToLower(body)
		return bytes.Contains(lower, []byte(`name="_method"`)) || bytes.Contains(lower, []byte(`name=_method`))
	}
	return false
}

// sameForwardedHost reports whether every host that X-Forwarded-Host (xfh) and
// Forwarded (fwd) name is host (canonical): frameworks behind a proxy route by the first
// or the last of them, so all must agree.
func sameForwardedHost(host, xfh, fwd string) bool {
	same := func(h string) bool {
		h = strings.Trim(strings.TrimSpace(h), `"`)
		c, err := CanonicalHost(h)
		return err == nil && strings.EqualFold(c, host)
	}
	for xfh != "" {
		var h string
		h, xfh, _ = strings.Cut(xfh, ",")
		if !same(h) {
			return false
		}
	}
	for fwd != "" {
		var el string
		el, fwd, _ = strings.Cut(fwd, ",")
		for el != "" {
			var pair string
			pair, el, _ = strings.Cut(el, ";")
			k, v, _ := strings.Cut(strings.TrimSpace(pair), "=")
			if strings.EqualFold(k, "host") && !same(v) {
				return false
			}
		}
	}
	return true
}

// SameHeaderName reports whether a header name is lower, a lower-case '-'-separated
// name, as CGI, WSGI and Rack servers read it: in any case, with '_' for '-'
// (X_Api_Key_Id is x-api-key-id to them).
func SameHeaderName(name, lower string) bool {
	if len(name) != len(lower) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

package envoy

import (
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
)

// readNames are the headers a check reads.
var readNames = []string{headerAuthorization, headerAPIKey, HeaderRequestID, headerXFCC, headerClientCert,
	"x-http-method-override", "x-http-method", "x-method-override", headerPartialBody,
	"content-type", "x-forwarded-host", "forwarded"}

// overrideNames are read with '_' for '-' too.
var overrideNames = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// referenceFrom is requestFrom as specified, the plain way: every header whose name
// equals a read name in any case (same length, strings.EqualFold; a method override's
// also with '_' for '-'), repeated ones joined with ",".
func referenceFrom(h *authv3.AttributeContext_HttpRequest) (authz.Request, forwarded) {
	var r authz.Request
	var fwd forwarded
	add := func(name, value string) {
		dsts := map[string]*string{headerAuthorization: &r.Authorization, headerAPIKey: &r.APIKey, HeaderRequestID: &r.RequestID,
			headerXFCC: &fwd.xfcc, headerClientCert: &fwd.clientCert, "x-http-method-override": &r.MethodOverride,
			"x-http-method": &r.MethodOverride, "x-method-override": &r.MethodOverride,
			"content-type": &r.ContentType, "x-forwarded-host": &r.ForwardedHost, "forwarded": &r.Forwarded}
		for _, n := range readNames {
			folded := name
			if slices.Contains(overrideNames, n) {
				folded = strings.ReplaceAll(name, "_", "-")
			}
			if len(folded) != len(n) || !strings.EqualFold(folded, n) {
				continue
			}
			if n == headerPartialBody {
				r.BodyPartial = value == "true"
				return
			}
			if d := dsts[n]; *d == "" {
				*d = value
			} else {
				*d += "," + value
			}
		}
	}
	for k, v := range h.GetHeaders() {
		add(k, v)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		add(hv.GetKey(), v)
	}
	return r, fwd
}

func sameRead(t *testing.T, h *authv3.AttributeContext_HttpRequest) {
	t.Helper()
	got, gotFwd := requestFrom(h)
	want, wantFwd := referenceFrom(h)
	got.Method, got.Host, got.Path, got.Body = "", "", "", nil
	if !joinedEq(got.Authorization, want.Authorization) || !joinedEq(got.APIKey, want.APIKey) ||
		!joinedEq(got.RequestID, want.RequestID) || !joinedEq(got.MethodOverride, want.MethodOverride) ||
		!joinedEq(got.ContentType, want.ContentType) || !joinedEq(got.ForwardedHost, want.ForwardedHost) ||
		!joinedEq(got.Forwarded, want.Forwarded) ||
		got.BodyPartial != want.BodyPartial && !bothInHeaders(h) ||
		!joinedEq(gotFwd.xfcc, wantFwd.xfcc) || !joinedEq(gotFwd.clientCert, wantFwd.clientCert) {
		t.Fatalf("read %+v %+v, want %+v %+v", got, gotFwd, want, wantFwd)
	}
}

// joinedEq compares two joined header values as their pieces: the headers map has no
// order, so neither have the values joined from it.
func joinedEq(a, b string) bool {
	pa, pb := strings.Split(a, ","), strings.Split(b, ",")
	slices.Sort(pa)
	slices.Sort(pb)
	return slices.Equal(pa, pb)
}

// bothInHeaders reports whether the partial-body flag read depends on map order: the
// headers map has it more than once and header_map (read after it, in order) not.
func bothInHeaders(h *authv3.AttributeContext_HttpRequest) bool {
	isFlag := func(k string) bool {
		return len(k) == len(headerPartialBody) && strings.EqualFold(k, headerPartialBody)
	}
	n := 0
	for k := range h.GetHeaders() {
		if isFlag(k) {
			n++
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if isFlag(hv.GetKey()) {
			return false
		}
	}
	return n > 1
}

// Every read header is found in any ASCII case, in headers and in header_map, and
// repeated ones are joined; names that fold to one only through non-ASCII runes
// (the Kelvin sign, the long s) are not the header.
func TestHeaderNamesAnyCase(t *testing.T) {
	for _, n := range readNames {
		variants := []string{n, strings.ToUpper(n), strings.ToUpper(n[:1]) + n[1:], mixed(n), strings.ReplaceAll(n, "-", "_"),
			strings.Replace(n, "k", "\u212a", 1), strings.Replace(n, "s", "\u017f", 1), n[:len(n)-1], n + " "}
		for _, v := range variants {
			sameRead(t, &authv3.AttributeContext_HttpRequest{Headers: map[string]string{v: "true"}})
			sameRead(t, &authv3.AttributeContext_HttpRequest{Headers: map[string]string{v: "a", n: "b"},
				HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: v, Value: "c"}, {Key: n, RawValue: []byte("true")}}}})
		}
	}
	h := &authv3.AttributeContext_HttpRequest{Headers: map[string]string{"Authorization": "Bearer a", "authorization": "Bearer b"}}
	if r, _ := requestFrom(h); r.Authorization != "Bearer a,Bearer b" && r.Authorization != "Bearer b,Bearer a" {
		t.Fatalf("two authorization headers read as %q, want both joined", r.Authorization)
	}
}

// mixed alternates the case of n's letters.
func mixed(n string) string {
	b := []byte(n)
	for i := range b {
		if i%2 == 0 && 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzRequestFrom: for any header names and values, in headers and header_map, the
// request read is the one the plain definition gives.
func FuzzRequestFrom(f *testing.F) {
	for _, n := range readNames {
		f.Add(n, "v", strings.ToUpper(n), "true", mixed(n))
	}
	f.Add("X-API-\u212aEY", "k", "x-api-key", "k2", "X-Api-Key")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2, n3 string) {
		sameRead(t, &authv3.AttributeContext_HttpRequest{Headers: map[string]string{n1: v1, n2: v2},
			HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: n3, Value: v1}, {Key: n1, RawValue: []byte(v2)}}}})
	})
}

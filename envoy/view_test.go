package envoy

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/keygate/keygate/authz"
)

// swapLookup answers with whatever record it holds now.
type swapLookup struct{ rec atomic.Pointer[authz.Record] }

func (s *swapLookup) Lookup(context.Context, authz.KeyHash) (authz.Record, error) {
	return *s.rec.Load(), nil
}

func headerValue(hs []*corev3.HeaderValueOption, name string) string {
	for _, h := range hs {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// The record-only parts of an answer are reused across checks of one key, but never
// once its name, owner or scopes change: every answer says what the current record
// says, whatever came before.
func TestAnswerFollowsRecordChanges(t *testing.T) {
	f, _ := authz.NewFormat(prefix)
	key, rec, err := f.Issue(authz.KeySpec{Name: "first", Owner: "acct_a", Scopes: []string{"chat:completions"}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	l := &swapLookup{}
	e, err := authz.New(authz.Config{Format: f, Lookup: l})
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(e, Options{})
	if err != nil {
		t.Fatal(err)
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", Headers: map[string]string{"authorization": "Bearer " + key}}}}}
	changes := []func(r *authz.Record){
		func(*authz.Record) {},
		func(r *authz.Record) { r.Scopes = []string{"chat:completions", "models:read"} },
		func(r *authz.Record) { r.Scopes = []string{"models:read"} },
		func(r *authz.Record) { r.Name = "renamed" },
		func(r *authz.Record) { r.Owner = "acct_b" },
		func(r *authz.Record) { r.Scopes = nil },
	}
	for i, change := range changes {
		change(&rec)
		r := rec
		r.Scopes = append([]string(nil), rec.Scopes...)
		l.rec.Store(&r)
		for range 2 { // the second check reuses what the first made
			resp, err := s.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			ok := resp.GetOkResponse()
			scopes := strings.Join(rec.Scopes, ",")
			md := resp.GetDynamicMetadata().GetFields()
			var mdScopes []string
			for _, v := range md["scopes"].GetListValue().GetValues() {
				mdScopes = append(mdScopes, v.GetStringValue())
			}
			if got := headerValue(ok.GetHeaders(), HeaderKeyScopes); got != scopes ||
				headerValue(ok.GetResponseHeadersToAdd(), "X-API-Key-Scopes") != scopes ||
				headerValue(ok.GetHeaders(), HeaderKeyName) != rec.Name ||
				headerValue(ok.GetResponseHeadersToAdd(), "X-API-Key-Name") != rec.Name ||
				md["key_name"].GetStringValue() != rec.Name || md["owner"].GetStringValue() != rec.Owner ||
				strings.Join(mdScopes, ",") != scopes {
				t.Fatalf("change %d: answer %v does not match record %+v", i, resp, rec)
			}
		}
	}
}

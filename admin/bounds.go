package admin

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
)

// A key an api-keys caller creates or rotates never exceeds the caller:
//
//   - scopes: each one held by the caller, itself or under a wildcard ("chat:*" grants
//     "chat:completions" and "chat:*", not "*"); never "admin";
//   - models: with a caller allow-list, a list within it (an entry ending in '*' covers
//     what starts with the rest); a request that names no models gets the caller's list;
//   - expiry: no later than the caller's; a request that names none gets the caller's
//     (so a caller that expires cannot make a user key, which never does);
//   - certificate binding: the caller's, inherited (a caller admitted by its client
//     certificate binds its keys to that certificate's fingerprint);
//   - plan: the caller's; only an admin names another.
//
// An admin caller is not bounded. Keys stay valid when the key that made them is revoked
// (revocation is per key): find them by created_by, or by the actor of key.created.

// inherit fills what a non-admin caller's request leaves out from the caller.
func (c caller) inherit(s *authz.KeySpec) {
	if c.admin {
		return
	}
	if len(s.Models) == 0 {
		s.Models = slices.Clone(c.rec.Models)
	}
	if s.ExpiresAt.IsZero() && s.Kind != authz.KindUser {
		s.ExpiresAt = c.rec.ExpiresAt
	}
	if s.BoundCert == "" {
		s.BoundCert = c.binding()
	}
	if s.Plan == "" {
		s.Plan = c.rec.Plan
	}
}

// exceeds says how a key made to spec would exceed a non-admin caller, or "" when it
// would not.
func (c caller) exceeds(s authz.KeySpec) string {
	if c.admin {
		return ""
	}
	r := c.rec
	for _, sc := range s.Scopes {
		if !scopeWithin(r.Scopes, sc) {
			return fmt.Sprintf("the caller cannot grant scope %q it does not hold", sc)
		}
	}
	if len(r.Models) > 0 {
		if len(s.Models) == 0 {
			return "the caller has a model allow-list, so its keys need one within it"
		}
		for _, m := range s.Models {
			if !modelWithin(r.Models, m) {
				return fmt.Sprintf("model %q is outside the caller's allow-list", m)
			}
		}
	}
	if !r.ExpiresAt.IsZero() && (s.ExpiresAt.IsZero() || s.ExpiresAt.After(r.ExpiresAt)) {
		return fmt.Sprintf("the key would outlive the caller, which expires at %s (user keys never expire)",
			r.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if b := c.binding(); b != "" && !sameBinding(s.BoundCert, b) {
		return "the caller is bound to a client certificate, and so must its keys be, to the same one"
	}
	if s.Plan != r.Plan {
		return "only an admin caller sets a key's plan"
	}
	return ""
}

// binding is the certificate the caller's keys must be bound to: the caller's own
// binding, or for a caller admitted by its certificate alone, that certificate.
func (c caller) binding() string {
	if c.rec.Kind == authz.KindCertificate {
		return c.rec.Owner // the certificate's "sha256:" fingerprint
	}
	return c.rec.BoundCert
}

func sameBinding(a, b string) bool {
	if strings.HasPrefix(a, "sha256:") || strings.HasPrefix(b, "sha256:") {
		return strings.EqualFold(a, b) // hex digits in either case
	}
	return a == b
}

// scopeWithin reports whether a key holding held may grant scope s: s is not admin, and
// a held scope equals it or is a wildcard whose stem starts s's own stem.
func scopeWithin(held []string, s string) bool {
	if s == ScopeAdmin {
		return false
	}
	return slices.ContainsFunc(held, func(h string) bool { return h != ScopeAdmin && patternWithin(h, s) })
}

// modelWithin reports whether the allow-list entry m (a name, or a stem ending in '*')
// admits nothing that allow does not.
func modelWithin(allow []string, m string) bool {
	return slices.ContainsFunc(allow, func(a string) bool { return patternWithin(a, m) })
}

// patternWithin reports whether everything the pattern p covers is covered by the
// pattern h: they are equal, or h is a stem ending in '*' and p (without its own
// trailing '*') starts with that stem.
func patternWithin(h, p string) bool {
	if h == p {
		return true
	}
	stem, ok := strings.CutSuffix(h, "*")
	return ok && strings.HasPrefix(strings.TrimSuffix(p, "*"), stem)
}

// successorSpec is what a rotation of old makes at now (vaultstore's successor): the
// same scopes, models, binding and plan, and the same lifetime from now.
func successorSpec(old authz.Record, now time.Time) authz.KeySpec {
	s := authz.KeySpec{Name: old.Name, Owner: old.Owner, Scopes: old.Scopes, Kind: old.Kind, Models: old.Models,
		Plan: old.Plan, BoundCert: old.BoundCert}
	if !old.ExpiresAt.IsZero() {
		s.ExpiresAt = now.Add(old.ExpiresAt.Sub(old.CreatedAt)).Truncate(time.Second)
	}
	return s
}

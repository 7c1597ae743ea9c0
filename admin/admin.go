// Package admin is keygate's key management API over HTTP, with MUTX's routes:
//
//	GET    /api-keys              list keys (never the keys themselves)
//	POST   /api-keys              create a key; the response holds it, once
//	GET    /api-keys/{id}         one key's record
//	POST   /api-keys/{id}/rotate  replace a key; the old one stays valid for a grace period
//	DELETE /api-keys/{id}         revoke a key
//	PATCH  /api-keys/{id}         change a key's scopes (admin only)
//	GET    /audit                 recent audit events (audit.go)
//
// Callers authenticate with a keygate key, checked by the same engine as every request.
// A key with the "admin" scope manages every key; a key with the "api-keys" scope
// manages only its own owner's keys, and a key it creates or rotates never exceeds it
// (see bounds.go). 401 and 403 bodies follow the deny profile; other errors use
// {"success":false,"error":{"code","message"}}. Every call is audited, and anything
// key-shaped in a path or an error message is replaced by its hint first.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/internal/duration"
	"github.com/keygate/keygate/vaultstore"
)

// Scopes the admin API checks.
const (
	ScopeAdmin   = "admin"    // every key, every operation
	ScopeAPIKeys = "api-keys" // the caller's own owner's keys
)

// Store is what the API needs from the key store; *vaultstore.Store has it.
type Store interface {
	List(ctx context.Context) ([]authz.Record, error)
	ListOwner(ctx context.Context, owner string) ([]authz.Record, error)
	LastUsed(ctx context.Context, id string) (time.Time, error)
	Get(ctx context.Context, id string) (authz.Record, error)
	Create(ctx context.Context, r authz.Record) error
	Revoke(ctx context.Context, id string, at time.Time) (authz.Record, error)
	Rotate(ctx context.Context, f authz.Format, id string, grace time.Duration) (vaultstore.Rotation, error)
	SetScopes(ctx context.Context, id string, scopes []string) (before, after authz.Record, err error)
}

// Config configures the API.
type Config struct {
	Engine *authz.Engine // authenticates callers
	Store  Store
	Format authz.Format // of the keys it issues
	Audit  *audit.Log   // nil: no audit
	// DefaultGrace is how long a rotated key stays valid when the call names no grace;
	// 0 means 30 days.
	DefaultGrace time.Duration
	Now          func() time.Time // nil: time.Now
	// PeerOf returns the caller's verified client certificate (the listener's mTLS), so
	// that identity rules can admit an admin client certificate; nil: none.
	PeerOf func(*http.Request) authz.Peer
	// Usage records that a caller's key was used, as the check path does; nil: admin
	// calls leave no last-use record.
	Usage UsageRecorder
	// UsageStats answers the usage routes (usage.go); nil: they answer 501.
	UsageStats UsageReader
	// Session resolves a request without a key header to its caller from a console
	// session (the console package): the caller's current record, or ErrNoSession
	// (the certificate or a 401 decides), ErrSessionEnded, ErrCSRF, or another error
	// (503). nil: no sessions.
	Session func(*http.Request) (authz.Record, error)
}

// UsageRecorder remembers when keys were used; *vaultstore.Usage is one.
type UsageRecorder interface {
	Seen(id string, at time.Time)
}

// maxAuditPath caps the request path an admin.call event holds.
const maxAuditPath = 512

type api struct {
	Config
}

// New returns the API's handler.
func New(cfg Config) http.Handler {
	if cfg.DefaultGrace == 0 {
		cfg.DefaultGrace = 30 * 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &api{cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /api-keys", a.route(a.list))
	mux.Handle("POST /api-keys", a.route(a.create))
	mux.Handle("GET /api-keys/{id}", a.route(a.get))
	mux.Handle("POST /api-keys/{id}/rotate", a.route(a.rotate))
	mux.Handle("DELETE /api-keys/{id}", a.route(a.revoke))
	mux.Handle("PATCH /api-keys/{id}", a.route(a.setScopes))
	mux.Handle("GET /api-keys/{id}/usage", a.route(a.keyUsage))
	mux.Handle("GET /usage", a.route(a.ownerUsage))
	mux.Handle("GET /audit", a.route(a.recentAudit))
	return mux
}

// caller is an authenticated admin API client.
type caller struct {
	rec   authz.Record
	admin bool
}

func (c caller) may(r authz.Record) bool { return c.admin || r.Owner == c.rec.Owner }

// reply is what a handler answers: a status and a JSON value.
type reply struct {
	status int
	body   any
}

func fail(status int, code, msg string) reply {
	return reply{status, errorBody{Error: errorDetail{Code: code, Message: msg}}}
}

type errorBody struct {
	Success bool        `json:"success"`
	Error   errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// route authenticates the caller, runs h, writes its reply and audits the call.
func (a *api) route(h func(*http.Request, caller) reply) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := authz.Request{
			Authorization: joined(r.Header, "Authorization"),
			APIKey:        joined(r.Header, "X-API-Key"),
			RequestID:     r.Header.Get("X-Request-Id"),
		}
		if a.PeerOf != nil {
			req.Peer = a.PeerOf(r)
		}
		req.Source = SourceOf(r, req.Peer)
		details := map[string]any{"method": r.Method, "path": a.auditPath(r.URL.Path)}
		var d authz.Decision
		var err error
		var refused *reply
		switch {
		case !SameOrigin(r):
			// A browser's cookie or client certificate, sent by a page elsewhere.
			out := fail(http.StatusForbidden, "CSRF_REJECTED", "the request comes from another origin")
			refused = &out
		case a.Session != nil && req.Authorization == "" && req.APIKey == "":
			var rec authz.Record
			rec, err = a.Session(r)
			switch {
			case err == nil:
				d = authz.Decision{Reason: authz.ReasonAllowed, Record: rec}
				details["via"] = "console"
			case errors.Is(err, ErrNoSession):
				d, err = a.Engine.Authenticate(r.Context(), &req)
			case errors.Is(err, ErrSessionEnded):
				out := fail(http.StatusUnauthorized, "SESSION_ENDED", "the console session ended; sign in again")
				refused, err = &out, nil
			case errors.Is(err, ErrCSRF):
				out := fail(http.StatusForbidden, "CSRF_REJECTED", "the request lacks the session's X-CSRF-Token or comes from another origin")
				refused, err = &out, nil
			}
		default:
			d, err = a.Engine.Authenticate(r.Context(), &req)
		}
		if d.RequestID == "" {
			d.RequestID = authz.NewRequestID()
		}
		ev := audit.Event{Event: audit.AdminCall, Source: r.RemoteAddr, RequestID: d.RequestID, Details: details}
		w.Header().Set("X-Request-Id", d.RequestID)
		var out reply
		switch {
		case refused != nil:
			ev.Reason, ev.Status = strings.ToLower(refused.body.(errorBody).Error.Code), refused.status
			a.Audit.Write(ev)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(refused.status)
			_ = json.NewEncoder(w).Encode(refused.body)
			return
		case err != nil:
			out = fail(http.StatusServiceUnavailable, "STORE_UNAVAILABLE", "keygate could not check the caller's key")
		case d.Allowed() && (slices.Contains(d.Record.Scopes, ScopeAdmin) || slices.Contains(d.Record.Scopes, ScopeAPIKeys)):
			ev.Actor, ev.Owner = d.Record.ID, d.Record.Owner
			if a.Usage != nil && d.Record.Kind != authz.KindCertificate { // certificates have no key record
				a.Usage.Seen(d.Record.ID, a.Now())
			}
			out = h(r, caller{rec: d.Record, admin: slices.Contains(d.Record.Scopes, ScopeAdmin)})
			if e, ok := out.body.(errorBody); ok {
				// Messages can quote what the client sent: a scope, a model, a JSON field.
				e.Error.Message = a.Format.Redact(e.Error.Message)
				out.body = e
			}
		default:
			// A known key refused (no scope, revoked, expired) is its owner's to see.
			ev.Actor, ev.Owner = d.KeyID, d.Owner
			if d.Allowed() {
				d = a.Engine.Forbid(d, ScopeAdmin)
			}
			ev.Reason, ev.Status = d.Reason.String(), d.Denial.Status
			a.Audit.Write(ev)
			writeDenial(w, d.Denial)
			return
		}
		ev.Status = out.status
		a.Audit.Write(ev)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store") // a create or rotate answer holds a key
		w.WriteHeader(out.status)
		_ = json.NewEncoder(w).Encode(out.body)
	})
}

// auditPath returns the request path as an admin.call event holds it: redacted, so a
// key pasted where an id belongs stays out of the log, and capped.
func (a *api) auditPath(p string) string {
	p = a.Format.Redact(p)
	if len(p) > maxAuditPath {
		p = strings.ToValidUTF8(p[:maxAuditPath], "") + "..."
	}
	return p
}

func writeDenial(w http.ResponseWriter, d authz.Denial) {
	w.Header().Set("Content-Type", "application/json")
	if d.WWWAuthenticate != "" {
		w.Header().Set("WWW-Authenticate", d.WWWAuthenticate)
	}
	if d.RetryAfter != "" {
		w.Header().Set("Retry-After", d.RetryAfter)
	}
	w.WriteHeader(d.Status)
	_, _ = io.WriteString(w, d.Body)
}

// joined merges a repeated header the way Envoy does, so the engine sees the same
// thing it would in a CheckRequest.
func joined(h http.Header, name string) string {
	v := h.Values(name)
	switch len(v) {
	case 0:
		return ""
	case 1:
		return v[0]
	}
	out := v[0]
	for _, s := range v[1:] {
		out += "," + s
	}
	return out
}

func (a *api) list(r *http.Request, c caller) reply {
	// ?unused_for=30d: only live keys not used for that long, as `keys list --unused-for`.
	var idle time.Duration
	if vs, ok := r.URL.Query()["unused_for"]; ok {
		if len(vs) > 1 {
			return failBadRequest(`parameter "unused_for" is given more than once`)
		}
		d, err := duration.Parse(vs[0])
		if err != nil {
			return failBadRequest("unused_for: " + err.Error())
		}
		if d <= 0 {
			return failBadRequest("unused_for: want a positive duration such as 30d")
		}
		idle = d
	}
	var recs []authz.Record
	var err error
	if c.admin {
		recs, err = a.Store.List(r.Context())
	} else {
		recs, err = a.Store.ListOwner(r.Context(), c.rec.Owner) // not every owner's records
	}
	if err != nil {
		return storeFailure(err)
	}
	views := []View{}
	for _, rec := range recs {
		if !c.may(rec) {
			continue
		}
		v, err := a.view(r.Context(), rec)
		if err != nil {
			return storeFailure(err)
		}
		if idle > 0 {
			var last time.Time
			if v.LastUsedAt != nil {
				last = *v.LastUsedAt
			}
			if !Unused(rec, last, a.Now(), idle) {
				continue
			}
		}
		views = append(views, v)
	}
	return reply{http.StatusOK, views}
}

// view returns rec's view with its last use, as flushed to the store.
func (a *api) view(ctx context.Context, rec authz.Record) (View, error) {
	v := NewView(rec, a.Now())
	last, err := a.Store.LastUsed(ctx, rec.ID)
	if err != nil {
		return v, err
	}
	if !last.IsZero() {
		v.LastUsedAt = &last
	}
	return v, nil
}

// find returns the record the path names, if the caller may see it. A key of another
// owner is "not found", so callers cannot probe for ids.
func (a *api) find(r *http.Request, c caller) (authz.Record, *reply) {
	rec, err := a.Store.Get(r.Context(), r.PathValue("id"))
	if err == nil && !c.may(rec) {
		err = vaultstore.ErrKeyNotFound
	}
	if err != nil {
		out := storeFailure(err)
		return rec, &out
	}
	return rec, nil
}

func (a *api) get(r *http.Request, c caller) reply {
	rec, miss := a.find(r, c)
	if miss != nil {
		return *miss
	}
	v, err := a.view(r.Context(), rec)
	if err != nil {
		return storeFailure(err)
	}
	return reply{http.StatusOK, v}
}

// CreateRequest is the body of POST /api-keys.
type CreateRequest struct {
	Name      string     `json:"name"`
	Owner     string     `json:"owner"`      // default: the caller's owner
	Scopes    []string   `json:"scopes"`     // within the caller's, unless it is an admin
	Kind      authz.Kind `json:"kind"`       // "product" (default) or "user"
	ExpiresIn string     `json:"expires_in"` // "90d", "720h"; empty: never expires (a non-admin caller's own expiry)
	Models    []string   `json:"models"`     // model allow-list; empty: any model (a non-admin caller's own list)
	Plan      string     `json:"plan"`       // rate-limit plan; admin only (others: the caller's plan)
	BindCert  string     `json:"bind_cert"`  // a SPIFFE ID or sha256: fingerprint (a bound caller's own binding)
}

func (a *api) create(r *http.Request, c caller) reply {
	var req CreateRequest
	if out := decode(r, &req); out != nil {
		return *out
	}
	if req.Owner == "" {
		req.Owner = c.rec.Owner
	}
	if !c.admin && req.Owner != c.rec.Owner {
		return fail(http.StatusForbidden, "FORBIDDEN", "an api-keys caller creates keys for its own owner only")
	}
	now := a.Now()
	spec := authz.KeySpec{Name: req.Name, Owner: req.Owner, Scopes: req.Scopes, Kind: req.Kind, Models: req.Models,
		Plan: req.Plan, BoundCert: req.BindCert, CreatedBy: c.rec.ID}
	if req.ExpiresIn != "" {
		d, err := duration.Parse(req.ExpiresIn)
		if err != nil || d <= 0 {
			return fail(http.StatusBadRequest, "INVALID_REQUEST", "expires_in must be a positive duration such as 90d")
		}
		spec.ExpiresAt = now.Add(d)
	}
	c.inherit(&spec)
	key, rec, err := a.Format.Issue(spec, now) // validates sizes and syntax before bounds quote them
	if err != nil {
		return fail(http.StatusBadRequest, "INVALID_REQUEST", err.Error())
	}
	if why := c.exceeds(spec); why != "" {
		return fail(http.StatusForbidden, "FORBIDDEN", why)
	}
	if err := a.Store.Create(r.Context(), rec); err != nil {
		return storeFailure(err)
	}
	a.Audit.Write(audit.Event{Event: audit.KeyCreated, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner, Actor: c.rec.ID,
		Details: map[string]any{"name": rec.Name, "scopes": rec.Scopes, "kind": rec.Kind}})
	return reply{http.StatusCreated, WithKey{NewView(rec, now), key}}
}

// RotateRequest is the optional body of POST /api-keys/{id}/rotate.
type RotateRequest struct {
	Grace string `json:"grace"` // how long the old key stays valid; "0" revokes it now
}

func (a *api) rotate(r *http.Request, c caller) reply {
	old, miss := a.find(r, c)
	if miss != nil {
		return *miss
	}
	var req RotateRequest
	if r.ContentLength != 0 {
		if out := decode(r, &req); out != nil {
			return *out
		}
	}
	grace := a.DefaultGrace
	if req.Grace != "" {
		d, err := duration.Parse(req.Grace)
		if err != nil || d < 0 {
			return failBadRequest("grace must be a duration such as 30d, or 0")
		}
		grace = d
	}
	if why := c.exceeds(successorSpec(old, a.Now())); why != "" {
		return fail(http.StatusForbidden, "FORBIDDEN", "the new key would exceed the caller, so an admin must rotate this one: "+why)
	}
	rot, err := a.Store.Rotate(r.Context(), a.Format, old.ID, grace)
	if err != nil {
		return storeFailure(err)
	}
	now := a.Now()
	a.Audit.Write(audit.Event{Event: audit.KeyRotated, KeyID: old.ID, KeyHint: old.Hint, Owner: old.Owner, Actor: c.rec.ID,
		Details: map[string]any{"new_id": rot.New.ID, "new_hint": rot.New.Hint, "old_valid_until": validUntil(rot.Old)}})
	oldView, err := a.view(r.Context(), rot.Old)
	if err != nil {
		oldView = NewView(rot.Old, now) // the rotation is done: answer it, without the last use
	}
	return reply{http.StatusCreated, RotateResponse{WithKey: WithKey{NewView(rot.New, now), rot.Key}, Old: oldView}}
}

func (a *api) revoke(r *http.Request, c caller) reply {
	rec, miss := a.find(r, c)
	if miss != nil {
		return *miss
	}
	rec, err := a.Store.Revoke(r.Context(), rec.ID, a.Now())
	if err != nil {
		return storeFailure(err)
	}
	a.Audit.Write(audit.Event{Event: audit.KeyRevoked, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner, Actor: c.rec.ID})
	v, err := a.view(r.Context(), rec)
	if err != nil {
		v = NewView(rec, a.Now()) // revoked all the same
	}
	return reply{http.StatusOK, v}
}

// ScopesRequest is the body of PATCH /api-keys/{id}.
type ScopesRequest struct {
	Scopes []string `json:"scopes"`
}

func (a *api) setScopes(r *http.Request, c caller) reply {
	if !c.admin {
		return fail(http.StatusForbidden, "FORBIDDEN", "changing scopes needs the admin scope")
	}
	rec, miss := a.find(r, c)
	if miss != nil {
		return *miss
	}
	var req ScopesRequest
	if out := decode(r, &req); out != nil {
		return *out
	}
	before, after, err := a.Store.SetScopes(r.Context(), rec.ID, req.Scopes)
	if errors.Is(err, authz.ErrInvalidKeySpec) {
		return failBadRequest(err.Error())
	}
	if err != nil {
		return storeFailure(err)
	}
	a.Audit.Write(audit.Event{Event: audit.KeyScopesChanged, KeyID: rec.ID, KeyHint: rec.Hint, Owner: rec.Owner, Actor: c.rec.ID,
		Details: map[string]any{"before": before.Scopes, "after": after.Scopes}})
	v, err := a.view(r.Context(), after)
	if err != nil {
		v = NewView(after, a.Now())
	}
	return reply{http.StatusOK, v}
}

func failBadRequest(msg string) reply { return fail(http.StatusBadRequest, "INVALID_REQUEST", msg) }

// decode reads a JSON body of at most 64 KiB, refusing unknown fields.
func decode(r *http.Request, v any) *reply {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		out := failBadRequest("invalid JSON body: " + err.Error())
		return &out
	}
	return nil
}

// storeFailure maps a store error to its reply.
func storeFailure(err error) reply {
	switch {
	case errors.Is(err, vaultstore.ErrKeyNotFound), errors.Is(err, vaultstore.ErrInvalidKeyID):
		return fail(http.StatusNotFound, "KEY_NOT_FOUND", "no such key")
	case errors.Is(err, vaultstore.ErrNameTaken):
		return fail(http.StatusConflict, "NAME_TAKEN", "the owner already has a live key with this name")
	case errors.Is(err, vaultstore.ErrUserKeyExists):
		return fail(http.StatusConflict, "USER_KEY_EXISTS", "the owner already has a user key")
	case errors.Is(err, vaultstore.ErrNotLive), errors.Is(err, vaultstore.ErrAlreadyRotated):
		return fail(http.StatusConflict, "NOT_ROTATABLE", err.Error())
	case errors.Is(err, vaultstore.ErrConflict):
		return fail(http.StatusConflict, "CONFLICT", "the key changed meanwhile; retry")
	default:
		return fail(http.StatusServiceUnavailable, "STORE_UNAVAILABLE", "the key store is unavailable; retry")
	}
}

func validUntil(r authz.Record) time.Time {
	if !r.RevokedAt.IsZero() {
		return r.RevokedAt
	}
	return r.ExpiresAt
}

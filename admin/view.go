package admin

import (
	"time"

	"github.com/keygate/keygate/authz"
)

// View is a key's record as the API and the CLI show it: never the key, only its hint.
type View struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Owner      string     `json:"owner"`
	Kind       authz.Kind `json:"kind"`
	Scopes     []string   `json:"scopes"`
	Status     string     `json:"status"`
	Hint       string     `json:"hint"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	RevokedAt  *time.Time `json:"revoked_at"`
	ReplacedBy string     `json:"replaced_by,omitempty"`
	Models     []string   `json:"models,omitempty"`
	Plan       string     `json:"plan,omitempty"`
	BoundCert  string     `json:"bound_cert,omitempty"`
	CreatedBy  string     `json:"created_by,omitempty"` // the admin caller's key that made it
	// LastUsedAt is the last use flushed to the store (up to usage_flush behind); null
	// when the key was never used.
	LastUsedAt *time.Time `json:"last_used_at"`
}

// NewView returns r as shown at now.
func NewView(r authz.Record, now time.Time) View {
	v := View{ID: r.ID, Name: r.Name, Owner: r.Owner, Kind: r.Kind, Scopes: r.Scopes, Status: string(r.StatusAt(now)),
		Hint: r.Hint, CreatedAt: r.CreatedAt, ReplacedBy: r.ReplacedBy, Models: r.Models, Plan: r.Plan, BoundCert: r.BoundCert,
		CreatedBy: r.CreatedBy}
	if v.Scopes == nil {
		v.Scopes = []string{}
	}
	if !r.ExpiresAt.IsZero() {
		v.ExpiresAt = &r.ExpiresAt
	}
	if !r.RevokedAt.IsZero() {
		v.RevokedAt = &r.RevokedAt
	}
	return v
}

// Unused reports whether r is live at now and has not been used for idle: its last use,
// or its creation when it was never used (lastUsed zero), lies idle or more before now.
// It is what `keys list --unused-for` and GET /api-keys?unused_for= select: keys to
// disable.
func Unused(r authz.Record, lastUsed, now time.Time, idle time.Duration) bool {
	since := r.CreatedAt
	if lastUsed.After(since) {
		since = lastUsed
	}
	return r.Live(now) && now.Sub(since) >= idle
}

// WithKey is a view plus the key itself: the one answer that shows it.
type WithKey struct {
	View
	Key string `json:"key"`
}

// RotateResponse is the answer to a rotation: the new key, once, and the old record.
type RotateResponse struct {
	WithKey
	Old View `json:"old"`
}

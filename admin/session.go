package admin

import (
	"errors"
	"net/http"
	"strings"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/certs"
)

// Errors a Config.Session resolver returns.
var (
	// ErrNoSession: the request holds no live session; the key header or client
	// certificate decides as usual.
	ErrNoSession = errors.New("admin: no session")
	// ErrSessionEnded: the session's caller no longer passes (its key was revoked,
	// expired, lost its scope); the answer is 401 SESSION_ENDED.
	ErrSessionEnded = errors.New("admin: the session ended")
	// ErrCSRF: the session is live but the request lacks its X-CSRF-Token or comes from
	// another origin; the answer is 403 CSRF_REJECTED.
	ErrCSRF = errors.New("admin: the request lacks the session's CSRF token or comes from another origin")
)

// SameOrigin reports whether r comes from the page of the listener it reached, as far
// as the browser says: a Sec-Fetch-Site other than same-origin (or none, the user's own
// navigation) or an Origin other than the request's own scheme and host is refused.
// Clients that are not browsers send neither header and pass. Browsers send them on
// every cross-origin fetch and form post, so a page elsewhere cannot act with the
// browser's cookie or client certificate.
func SameOrigin(r *http.Request) bool {
	if vs := r.Header.Values("Sec-Fetch-Site"); len(vs) > 0 {
		if len(vs) != 1 || (vs[0] != "same-origin" && vs[0] != "none") {
			return false
		}
	}
	vs := r.Header.Values("Origin")
	switch len(vs) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	scheme := "http://"
	if r.TLS != nil {
		scheme = "https://"
	}
	return r.Host != "" && strings.EqualFold(vs[0], scheme+r.Host)
}

// SourceOf is the client an admin listener's request comes from, for the engine's
// per-client budget of unknown keys and its spray detection: the verified client
// certificate when there is one, else the connection's address. Keys guessed at the
// admin API or the console's sign-in are counted like keys guessed through Envoy.
func SourceOf(r *http.Request, p authz.Peer) authz.Source {
	src := authz.Source{Addr: r.RemoteAddr}
	if p.Verified {
		src.Fingerprint = p.Fingerprint
	}
	return src
}

// PeerFrom returns a Config.PeerOf that reads the connection's client certificate and
// checks it with verifier's current answer (its CA and CRL as last loaded): unverified
// when verifier returns nil or refuses the certificate.
func PeerFrom(verifier func() *certs.Verifier) func(*http.Request) authz.Peer {
	return func(r *http.Request) authz.Peer {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			return authz.Peer{}
		}
		v := verifier()
		if v == nil {
			return authz.Peer{Presented: true}
		}
		id, err := v.VerifyCert(r.TLS.PeerCertificates[0])
		if err != nil {
			return authz.Peer{Presented: true}
		}
		return authz.VerifiedPeer(id)
	}
}

package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
	"github.com/keygate/keygate/vaultstore"
)

//go:embed static
var static embed.FS

// Store is what the console needs from the key store: a caller's record by id, read
// again on every request. *vaultstore.Store has it.
type Store interface {
	Get(ctx context.Context, id string) (authz.Record, error)
}

// Config configures a Console.
type Config struct {
	Engine *authz.Engine // authenticates sign-ins, as the admin API does
	Store  Store
	Audit  *audit.Log // nil: no audit
	// PeerOf returns the caller's verified client certificate (the admin listener's
	// mTLS); nil: none, and no certificate sign-in.
	PeerOf func(*http.Request) authz.Peer
	// Usage records a sign-in as a use of the caller's key; nil: none.
	Usage admin.UsageRecorder
	Now   func() time.Time // nil: time.Now
	// IdleTimeout ends a session this long after its last request (0: 15 minutes);
	// MaxAge ends it this long after sign-in whatever its use (0: 8 hours).
	IdleTimeout, MaxAge time.Duration
	// MaxSessions caps the sessions held (0: 1024); when full, an admin's sign-in ends
	// the longest-idle api-keys session and any other sign-in is refused (503) until
	// some expire. MaxPerCaller caps one caller's (0: 8) and MaxPerOwner the api-keys
	// sessions of one owner, all its keys together (0: 32); a sign-in beyond either
	// ends the oldest of them.
	MaxSessions, MaxPerCaller, MaxPerOwner int
}

// Console serves the console's pages and its sign-in, and resolves API requests to
// their session's caller (Resolve, for admin.Config.Session).
type Console struct {
	cfg      Config
	sessions *sessions
	mux      *http.ServeMux
}

// New returns a Console for cfg.
func New(cfg Config) *Console {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 15 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 8 * time.Hour
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 1024
	}
	if cfg.MaxPerCaller <= 0 {
		cfg.MaxPerCaller = 8
	}
	if cfg.MaxPerOwner <= 0 {
		cfg.MaxPerOwner = 32
	}
	c := &Console{cfg: cfg, sessions: newSessions(cfg.IdleTimeout, cfg.MaxAge, cfg.MaxSessions, cfg.MaxPerCaller, cfg.MaxPerOwner)}
	c.mux = http.NewServeMux()
	c.mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/console/", http.StatusMovedPermanently)
	})
	c.mux.HandleFunc("GET /console/{$}", c.file("index.html"))
	c.mux.HandleFunc("GET /console/app.js", c.file("app.js"))
	c.mux.HandleFunc("GET /console/style.css", c.file("style.css"))
	c.mux.HandleFunc("GET /console/favicon.svg", c.file("favicon.svg"))
	c.mux.HandleFunc("GET /console/session", c.whoami)
	c.mux.HandleFunc("POST /console/session", c.signIn)
	c.mux.HandleFunc("DELETE /console/session", c.signOut)
	return c
}

// Handler serves the admin listener: the console under /console, and api (the admin
// API) for everything else. Every answer carries the console's security headers.
func (c *Console) Handler(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/console", c.mux)
	mux.Handle("/console/", c.mux)
	mux.Handle("/", api)
	return Headers(mux)
}

// CSP is the console's Content-Security-Policy: its own scripts, styles and images
// only, no inline code, no framing, calls to its own origin only.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Headers sets the console's security headers on every answer of h.
func Headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", CSP)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (c *Console) file(name string) http.HandlerFunc {
	body, err := static.ReadFile("static/" + name)
	if err != nil {
		panic("console: " + name + " is not embedded")
	}
	ctype := mime.TypeByExtension(name[strings.LastIndexByte(name, '.'):])
	switch {
	case strings.HasSuffix(name, ".js"):
		ctype = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		ctype = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".html"):
		ctype = "text/html; charset=utf-8"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", ctype)
		_, _ = w.Write(body)
	}
}

// cookieName is the session cookie's name: with the __Host- prefix on TLS, so the
// browser takes it only from this host, over TLS, with Path=/.
func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return "__Host-keygate-console"
	}
	return "keygate-console"
}

// cookie returns the request's session cookie value: exactly one cookie of the name,
// or none (two are a planted cookie beside ours; neither is trusted).
func cookie(r *http.Request) (string, bool) {
	cs := r.CookiesNamed(cookieName(r))
	if len(cs) != 1 {
		return "", false
	}
	return cs[0].Value, true
}

func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// Resolve returns the caller of an API request from its console session, for
// admin.Config.Session: admin.ErrNoSession without a live one, admin.ErrCSRF when the
// request lacks the session's X-CSRF-Token or comes from another origin, and
// admin.ErrSessionEnded (the session is deleted) when its caller no longer passes.
func (c *Console) Resolve(r *http.Request) (authz.Record, error) {
	v, ok := cookie(r)
	if !ok {
		return authz.Record{}, admin.ErrNoSession
	}
	x, ok := c.sessions.get(v, c.cfg.Now())
	if !ok {
		return authz.Record{}, admin.ErrNoSession
	}
	if !admin.SameOrigin(r) || !csrfMatches(r.Header.Values("X-CSRF-Token"), x.csrf) {
		return authz.Record{}, admin.ErrCSRF
	}
	return c.current(r, v, x)
}

// current returns the session's caller as it stands now, ending the session when it no
// longer passes the admin API's rule.
func (c *Console) current(r *http.Request, v string, x session) (authz.Record, error) {
	rec, err := c.caller(r, x)
	if errors.Is(err, admin.ErrSessionEnded) {
		c.sessions.remove(v)
	}
	if err != nil {
		return authz.Record{}, err
	}
	c.sessions.touch(v, c.cfg.Now())
	return rec, nil
}

func (c *Console) peer(r *http.Request) authz.Peer {
	if c.cfg.PeerOf == nil {
		return authz.Peer{}
	}
	return c.cfg.PeerOf(r)
}

// caller reads the session's caller again: the key's record from the store (revoked,
// expired, lost scope, other owner, or a bound key without its certificate: ended), or
// the client certificate through the engine (it must match the same identity rule).
func (c *Console) caller(r *http.Request, x session) (authz.Record, error) {
	if x.cert {
		p := c.peer(r)
		d, err := c.cfg.Engine.Authenticate(r.Context(), &authz.Request{Peer: p, Source: admin.SourceOf(r, p)})
		if err != nil {
			return authz.Record{}, err
		}
		if !d.Allowed() || d.Record.ID != x.keyID || d.Record.Owner != x.owner || !scoped(d.Record) {
			return authz.Record{}, admin.ErrSessionEnded
		}
		return d.Record, nil
	}
	rec, err := c.cfg.Store.Get(r.Context(), x.keyID)
	switch {
	case errors.Is(err, vaultstore.ErrKeyNotFound), errors.Is(err, vaultstore.ErrInvalidKeyID):
		return authz.Record{}, admin.ErrSessionEnded
	case err != nil:
		return authz.Record{}, err
	}
	if rec.ID != x.keyID || rec.Owner != x.owner || !rec.Live(c.cfg.Now()) || !scoped(rec) ||
		(rec.BoundCert != "" && !holds(c.peer(r), rec.BoundCert)) {
		return authz.Record{}, admin.ErrSessionEnded
	}
	return rec, nil
}

// scoped reports whether rec passes the admin API's scope rule.
func scoped(rec authz.Record) bool {
	return slices.Contains(rec.Scopes, admin.ScopeAdmin) || slices.Contains(rec.Scopes, admin.ScopeAPIKeys)
}

// holds reports whether the verified peer is the certificate a key is bound to, as the
// engine decides it at sign-in: its fingerprint, or one of its SPIFFE IDs.
func holds(p authz.Peer, bound string) bool {
	if !p.Verified {
		return false
	}
	if strings.HasPrefix(bound, "sha256:") {
		return strings.EqualFold(bound, p.Fingerprint)
	}
	return slices.Contains(p.SPIFFE, bound)
}

// SignIn is the body of POST /console/session: a key, or certificate true to sign in
// with the connection's client certificate.
type SignIn struct {
	Key         string `json:"key"`
	Certificate bool   `json:"certificate"`
}

// Session is the answer to a sign-in and to GET /console/session: who is signed in and
// the CSRF token the page sends with each API call. Never a key.
type Session struct {
	KeyID       string    `json:"key_id"`
	Owner       string    `json:"owner"`
	Name        string    `json:"name"`
	Admin       bool      `json:"admin"`
	Certificate bool      `json:"certificate"`
	CSRFToken   string    `json:"csrf_token"`
	IdleTimeout int       `json:"idle_timeout_seconds"`
	ExpiresAt   time.Time `json:"expires_at"`
}

func (c *Console) answer(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (c *Console) fail(w http.ResponseWriter, status int, code, msg string) {
	c.answer(w, status, map[string]any{"success": false, "error": map[string]string{"code": code, "message": msg}})
}

func (c *Console) event(r *http.Request, action string) audit.Event {
	return audit.Event{Event: audit.AdminCall, Source: r.RemoteAddr,
		Details: map[string]any{"method": r.Method, "path": "/console/session", "via": "console", "action": action}}
}

func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	ev := c.event(r, "sign-in")
	refuse := func(status int, code, msg string) {
		ev.Status, ev.Reason = status, strings.ToLower(code)
		c.cfg.Audit.Write(ev)
		c.fail(w, status, code, msg)
	}
	if !admin.SameOrigin(r) {
		refuse(http.StatusForbidden, "CSRF_REJECTED", "the sign-in comes from another origin")
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		refuse(http.StatusUnsupportedMediaType, "INVALID_REQUEST", "send the sign-in as application/json")
		return
	}
	var in SignIn
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		refuse(http.StatusBadRequest, "INVALID_REQUEST", "want {\"key\":\"…\"} or {\"certificate\":true}")
		return
	}
	if in.Key == "" && !in.Certificate {
		refuse(http.StatusBadRequest, "INVALID_REQUEST", "paste a key, or sign in with your client certificate")
		return
	}
	p := c.peer(r)
	req := authz.Request{APIKey: in.Key, Peer: p, Source: admin.SourceOf(r, p)}
	d, err := c.cfg.Engine.Authenticate(r.Context(), &req)
	ev.RequestID = d.RequestID
	w.Header().Set("X-Request-Id", d.RequestID)
	if err != nil {
		refuse(http.StatusServiceUnavailable, "STORE_UNAVAILABLE", "keygate could not check the key")
		return
	}
	if d.Allowed() && !scoped(d.Record) {
		ev.Actor = d.Record.ID
		d = c.cfg.Engine.Forbid(d, admin.ScopeAdmin)
	}
	if !d.Allowed() {
		// The same answer as the admin API's for the same credentials: no more to learn here.
		ev.Reason, ev.Status = d.Reason.String(), d.Denial.Status
		c.cfg.Audit.Write(ev)
		w.Header().Set("Content-Type", "application/json")
		if d.Denial.WWWAuthenticate != "" {
			w.Header().Set("WWW-Authenticate", d.Denial.WWWAuthenticate)
		}
		if d.Denial.RetryAfter != "" {
			w.Header().Set("Retry-After", d.Denial.RetryAfter)
		}
		w.WriteHeader(d.Denial.Status)
		_, _ = io.WriteString(w, d.Denial.Body)
		return
	}
	rec := d.Record
	ev.Actor, ev.Owner = rec.ID, rec.Owner
	now := c.cfg.Now()
	x := &session{keyID: rec.ID, owner: rec.Owner, admin: slices.Contains(rec.Scopes, admin.ScopeAdmin),
		cert: rec.Kind == authz.KindCertificate, csrf: token()}
	if v, ok := cookie(r); ok {
		c.sessions.remove(v) // this browser's previous session, if any
	}
	id, err := c.sessions.add(x, now)
	if err != nil {
		refuse(http.StatusServiceUnavailable, "TOO_MANY_SESSIONS", err.Error())
		return
	}
	if c.cfg.Usage != nil && !x.cert {
		c.cfg.Usage.Seen(rec.ID, now)
	}
	ev.Status = http.StatusCreated
	c.cfg.Audit.Write(ev)
	setCookie(w, r, id, int(c.cfg.MaxAge/time.Second))
	c.answer(w, http.StatusCreated, c.view(rec, *x))
}

func (c *Console) view(rec authz.Record, x session) Session {
	return Session{KeyID: x.keyID, Owner: x.owner, Name: rec.Name, Admin: slices.Contains(rec.Scopes, admin.ScopeAdmin),
		Certificate: x.cert, CSRFToken: x.csrf, IdleTimeout: int(c.cfg.IdleTimeout / time.Second),
		ExpiresAt: x.created.Add(c.cfg.MaxAge).UTC()}
}

// whoami answers the page's question on load: the live session and its CSRF token,
// read only by a same-origin page.
func (c *Console) whoami(w http.ResponseWriter, r *http.Request) {
	v, ok := cookie(r)
	var x session
	if ok {
		x, ok = c.sessions.get(v, c.cfg.Now())
	}
	if !ok {
		c.fail(w, http.StatusUnauthorized, "NO_SESSION", "not signed in")
		return
	}
	if !admin.SameOrigin(r) {
		c.fail(w, http.StatusForbidden, "CSRF_REJECTED", "the request comes from another origin")
		return
	}
	rec, err := c.current(r, v, x)
	switch {
	case errors.Is(err, admin.ErrSessionEnded):
		setCookie(w, r, "", -1)
		c.fail(w, http.StatusUnauthorized, "SESSION_ENDED", "the console session ended; sign in again")
	case err != nil:
		c.fail(w, http.StatusServiceUnavailable, "STORE_UNAVAILABLE", "the key store is unavailable; retry")
	default:
		c.answer(w, http.StatusOK, c.view(rec, x))
	}
}

// signOut deletes the session; it needs the CSRF token, so a page elsewhere cannot sign
// the operator out.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	v, ok := cookie(r)
	var x session
	if ok {
		x, ok = c.sessions.get(v, c.cfg.Now())
	}
	if !ok {
		setCookie(w, r, "", -1)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !admin.SameOrigin(r) || !csrfMatches(r.Header.Values("X-CSRF-Token"), x.csrf) {
		c.fail(w, http.StatusForbidden, "CSRF_REJECTED", "the request lacks the session's X-CSRF-Token or comes from another origin")
		return
	}
	c.sessions.remove(v)
	ev := c.event(r, "sign-out")
	ev.Actor, ev.Owner, ev.Status = x.keyID, x.owner, http.StatusNoContent
	c.cfg.Audit.Write(ev)
	setCookie(w, r, "", -1)
	w.WriteHeader(http.StatusNoContent)
}

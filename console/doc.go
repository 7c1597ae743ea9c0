// Package console is keygate's operator console: a few static pages, embedded in the
// binary, that the admin listener serves at /console/. The pages call the admin API's
// own routes with fetch, so the console can do nothing the API would refuse the same
// caller.
//
// An operator signs in with an admin or api-keys key, or with a client certificate an
// identity rule admits, authenticated exactly as the admin API authenticates (one
// Engine.Authenticate call, the same scope rule). The console then holds a session:
// a random 256-bit id in an HttpOnly, SameSite=Strict cookie, and on the server the
// caller's key id (never the key), owner, a CSRF token, and idle and absolute expiry.
// The admin API accepts a session in place of the key header through
// admin.Config.Session, and only with the session's X-CSRF-Token header and a
// same-origin Origin/Sec-Fetch-Site: a cookie alone authorizes nothing. Every such
// request reads the caller's record again, so revoking or expiring the key, or removing
// its scope, ends the session at once.
//
// Sessions live in memory: a restart or another replica does not know them, and the
// operator signs in again. A Console is safe for concurrent use.
package console

package authz

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Reason says why a request was allowed or denied. Its String form is a short, fixed
// code fit for a metric label or a log field.
type Reason uint8

// Reasons, in the order the engine checks them.
// The zero Reason is "undecided", so a zero Decision never reads as an allow.
const (
	ReasonUndecided          Reason = iota // no decision was made (the store could not answer)
	ReasonAllowed                          // a valid, active key
	ReasonMissing                          // no credential header, or an empty one
	ReasonMalformed                        // wrong scheme, prefix, length or alphabet; whitespace; two different keys
	ReasonBadChecksum                      // well-formed but the checksum fails: mistyped or invented
	ReasonUnknownKey                       // checksum holds but no record has the key's hash
	ReasonRevoked                          // the key's record is revoked
	ReasonExpired                          // the key's record is past its expiry
	ReasonUnavailable                      // the store could not answer and nothing usable is cached (503)
	ReasonThrottled                        // an uncached key over the store's miss budget (503)
	ReasonInsufficientScope                // a valid key without the scope the operation requires (403)
	ReasonNoRoute                          // no route matches and the policy denies unmatched requests (403)
	ReasonModelNotAllowed                  // the body's model is not on the key's allow-list (403)
	ReasonBadBody                          // a model route's body is not a JSON object with one model (400)
	ReasonRateLimited                      // the key is over its rate limit (429)
	ReasonLimiterUnavailable               // the shared rate limiter cannot answer and fails closed (503)
	ReasonClientCertRequired               // mTLS is required and the request has no verified client certificate (403)
	ReasonClientCertInvalid                // the client certificate fails keygate's own verification (403)
	ReasonCertMismatch                     // a certificate-bound key without its certificate (401)
	ReasonBadRequest                       // a method, host or path servers could read in more than one way (400)
	numReasons
)

var reasonCodes = [numReasons]string{
	ReasonUndecided:          "undecided",
	ReasonAllowed:            "allowed",
	ReasonMissing:            "missing_key",
	ReasonMalformed:          "malformed_key",
	ReasonBadChecksum:        "bad_checksum",
	ReasonUnknownKey:         "unknown_key",
	ReasonRevoked:            "revoked_key",
	ReasonExpired:            "expired_key",
	ReasonUnavailable:        "store_unavailable",
	ReasonThrottled:          "lookup_throttled",
	ReasonInsufficientScope:  "insufficient_scope",
	ReasonNoRoute:            "no_route",
	ReasonModelNotAllowed:    "model_not_allowed",
	ReasonBadBody:            "invalid_body",
	ReasonRateLimited:        "rate_limited",
	ReasonLimiterUnavailable: "rate_limiter_unavailable",
	ReasonClientCertRequired: "client_cert_required",
	ReasonClientCertInvalid:  "client_cert_invalid",
	ReasonCertMismatch:       "cert_mismatch",
	ReasonBadRequest:         "invalid_request",
}

// Reasons returns every reason, in order; a Reason indexes the slice.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

func (r Reason) String() string {
	if r < numReasons {
		return reasonCodes[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Profile is the shape of deny bodies: each reproduces one of the API-key documents our
// users follow, so their clients see the errors they were written against.
type Profile uint8

// Deny profiles.
const (
	// ProfileMagicx (the default) follows AI Magicx: {"success":false,"error":{"code":
	// "AUTH_MISSING"|"AUTH_INVALID_FORMAT"|"AUTH_KEY_INVALID","message":…,"status":401}}.
	ProfileMagicx Profile = iota
	// ProfileAPIKey follows the generic key API: {"success":false,"error":{"code":
	// "MISSING_API_KEY"|"INVALID_API_KEY"|"EXPIRED_API_KEY","message":…,"details":{…}}}.
	ProfileAPIKey
	// ProfileMythIQ follows MythIQ: {"success":false,"message":…,"code":"authentication_error"}.
	ProfileMythIQ
	// ProfileOpenAI follows MX4 Atlas, whose users call it through OpenAI SDKs: OpenAI's
	// envelope {"error":{"message":…,"type":…,"param":null,"code":…}}.
	ProfileOpenAI
	numProfiles
)

var profileNames = [numProfiles]string{
	ProfileMagicx: "magicx",
	ProfileAPIKey: "apikey",
	ProfileMythIQ: "mythiq",
	ProfileOpenAI: "openai",
}

func (p Profile) String() string {
	if p < numProfiles {
		return profileNames[p]
	}
	return fmt.Sprintf("profile(%d)", uint8(p))
}

// Profiles returns the names of all deny profiles.
func Profiles() []string { return profileNames[:] }

// ParseProfile returns the profile with the given name.
func ParseProfile(name string) (Profile, error) {
	for p, n := range profileNames {
		if n == name {
			return Profile(p), nil
		}
	}
	return 0, fmt.Errorf("%w: %q (want one of %q)", ErrInvalidProfile, name, profileNames)
}

// Denial is how a request is refused: the HTTP status, the JSON body, for a 401 the
// WWW-Authenticate challenge, and for a 503 the Retry-After seconds.
type Denial struct {
	Status          int
	Body            string
	WWWAuthenticate string
	RetryAfter      string
}

// retryAfterSeconds is what a 503 asks clients to wait: the store or the miss budget
// usually recovers within a second.
const retryAfterSeconds = "1"

// status is the HTTP status of a denial for reason r.
func (r Reason) status() int {
	switch r {
	case ReasonUnavailable, ReasonThrottled, ReasonLimiterUnavailable:
		return http.StatusServiceUnavailable
	case ReasonInsufficientScope, ReasonNoRoute, ReasonModelNotAllowed, ReasonClientCertRequired, ReasonClientCertInvalid:
		return http.StatusForbidden
	case ReasonBadBody, ReasonBadRequest:
		return http.StatusBadRequest
	case ReasonRateLimited:
		return http.StatusTooManyRequests
	}
	return http.StatusUnauthorized
}

// denier renders denials for one profile. Bodies that depend only on the reason are
// rendered once, at construction; only bodies naming a key id or a time are rendered
// per request.
type denier struct {
	profile Profile
	prefix  string
	static  [numReasons]Denial
}

func newDenier(p Profile, prefix, realm string) (*denier, error) {
	if p >= numProfiles {
		return nil, fmt.Errorf("%w: %d", ErrInvalidProfile, p)
	}
	d := &denier{profile: p, prefix: prefix}
	for r := ReasonMissing; r < numReasons; r++ {
		den := Denial{Status: r.status(), Body: d.body(r, bodyArgs{})}
		switch den.Status {
		case http.StatusUnauthorized:
			den.WWWAuthenticate = challenge(realm, r)
		case http.StatusServiceUnavailable:
			den.RetryAfter = retryAfterSeconds
		}
		d.static[r] = den
	}
	return d, nil
}

// deny returns the denial for reason r; rec is the key's record when the key is known.
func (d *denier) deny(r Reason, rec *Record) Denial {
	out := d.static[r]
	if d.profile == ProfileAPIKey && rec != nil && (r == ReasonRevoked || r == ReasonExpired) {
		out.Body = d.body(r, argsOf(rec))
	}
	return out
}

// with returns the denial for r with a body naming what a names.
func (d *denier) with(r Reason, a bodyArgs) Denial {
	out := d.static[r]
	out.Body = d.body(r, a)
	if r == ReasonRateLimited {
		out.RetryAfter = strconv.Itoa(a.retry)
	}
	return out
}

// challenge is the RFC 6750 WWW-Authenticate value: no error code when credentials are
// missing, invalid_request when they are malformed, invalid_token otherwise.
func challenge(realm string, r Reason) string {
	v := fmt.Sprintf("Bearer realm=%q", realm)
	switch r {
	case ReasonMissing:
		return v
	case ReasonMalformed:
		return v + `, error="invalid_request"`
	default:
		return v + `, error="invalid_token"`
	}
}

// unavailableMessage is every profile's message for a 503: none of the documents has one.
const unavailableMessage = "Authentication is temporarily unavailable. Please retry shortly."

// Bodies, with fields in the order the documents show them.
type (
	magicxBody struct {
		Success bool        `json:"success"`
		Error   magicxError `json:"error"`
	}
	magicxError struct {
		Code    string         `json:"code"`
		Message string         `json:"message"`
		Status  int            `json:"status"`
		Details *magicxDetails `json:"details,omitempty"`
	}
	magicxDetails struct {
		RequiredScope string   `json:"required_scope"`
		CurrentScopes []string `json:"current_scopes"`
	}
	apikeyBody struct {
		Success bool        `json:"success"`
		Error   apikeyError `json:"error"`
	}
	apikeyError struct {
		Code    string        `json:"code"`
		Message string        `json:"message"`
		Details *apikeyDetail `json:"details,omitempty"`
	}
	apikeyDetail struct {
		Header        string `json:"header,omitempty"`
		KeyID         string `json:"key_id,omitempty"`
		ExpiredAt     string `json:"expired_at,omitempty"`
		RequiredScope string `json:"required_scope,omitempty"`
		Model         string `json:"model,omitempty"`
		RetryAfter    int    `json:"retry_after,omitempty"`
	}
	mythiqBody struct {
		Success bool   `json:"success"`
		Message string `json:"message"`
		Code    string `json:"code"`
	}
	openaiBody struct {
		Error openaiError `json:"error"`
	}
	openaiError struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	}
)

// bodyArgs are what some bodies name. They hold values, not the record itself, so
// that rendering a body never moves a decision to the heap.
type bodyArgs struct {
	known     bool // the key is known: keyID and expiresAt are set
	keyID     string
	expiresAt time.Time
	scopes    []string // the key's scopes
	required  string   // the scope a 403 needs
	model     string   // the model a 403 refuses
	retry     int      // the seconds a 429 asks to wait
}

func argsOf(rec *Record) bodyArgs {
	if rec == nil {
		return bodyArgs{}
	}
	return bodyArgs{known: rec.ID != "", keyID: rec.ID, expiresAt: rec.ExpiresAt, scopes: rec.Scopes}
}

// Messages keygate adds where the documents have none.
const (
	noRouteMessage     = "This API key cannot access this route."
	badBodyMessage     = `The request body must be one JSON object with one "model" string.`
	badRequestMessage  = "The request's method, host or path is ambiguous and was refused."
	rateLimitedMessage = "Rate limit exceeded. Please try again later."
	// MX4's troubleshooting: "Verify that your client certificate is signed by the CA
	// and has not expired."
	clientCertRequiredMessage = "A client certificate signed by the CA is required."
	clientCertInvalidMessage  = "Verify that your client certificate is signed by the CA and has not expired."
)

// body renders the profile's body for reason r.
func (d *denier) body(r Reason, a bodyArgs) string {
	var v any
	status := r.status()
	switch d.profile {
	case ProfileMagicx:
		e := magicxError{Code: "AUTH_KEY_INVALID", Message: "API key is invalid, expired, or revoked", Status: status}
		switch {
		case r == ReasonMissing:
			e.Code, e.Message = "AUTH_MISSING", "Authorization header required"
		case r == ReasonMalformed:
			e.Code, e.Message = "AUTH_INVALID_FORMAT", "Invalid authorization format. Expected: Bearer "+d.prefix+"..."
		case status == http.StatusServiceUnavailable:
			e.Code, e.Message = "AUTH_UNAVAILABLE", unavailableMessage
		case r == ReasonInsufficientScope:
			e.Code, e.Message = "AUTH_INSUFFICIENT_SCOPE", "Operation requires '"+a.required+"' scope"
			e.Details = &magicxDetails{RequiredScope: a.required, CurrentScopes: a.scopes}
			if a.scopes == nil {
				e.Details.CurrentScopes = []string{}
			}
		case r == ReasonNoRoute:
			e.Code, e.Message = "AUTH_ROUTE_FORBIDDEN", noRouteMessage
		case r == ReasonModelNotAllowed:
			e.Code, e.Message = "AUTH_MODEL_NOT_ALLOWED", "API key may not use model '"+a.model+"'"
		case r == ReasonClientCertRequired:
			e.Code, e.Message = "AUTH_CLIENT_CERT_REQUIRED", clientCertRequiredMessage
		case r == ReasonClientCertInvalid:
			e.Code, e.Message = "AUTH_CLIENT_CERT_INVALID", clientCertInvalidMessage
		case r == ReasonBadBody:
			e.Code, e.Message = "INVALID_REQUEST_BODY", badBodyMessage
		case r == ReasonBadRequest:
			e.Code, e.Message = "INVALID_REQUEST", badRequestMessage
		case r == ReasonRateLimited:
			e.Code, e.Message = "RATE_LIMITED", rateLimitedMessage
		}
		v = magicxBody{Error: e}
	case ProfileAPIKey:
		e := apikeyError{Code: "INVALID_API_KEY", Message: "The provided API key is invalid"}
		switch {
		case r == ReasonMissing:
			e.Code, e.Message = "MISSING_API_KEY", "API key is required"
			e.Details = &apikeyDetail{Header: "Authorization"}
		case r == ReasonExpired && a.known:
			e.Code, e.Message = "EXPIRED_API_KEY", "The API key has expired"
			e.Details = &apikeyDetail{ExpiredAt: a.expiresAt.UTC().Format(time.RFC3339)}
		case r == ReasonRevoked && a.known:
			e.Details = &apikeyDetail{KeyID: a.keyID}
		case status == http.StatusServiceUnavailable:
			e.Code, e.Message = "AUTH_UNAVAILABLE", unavailableMessage
		case r == ReasonClientCertRequired:
			e.Code, e.Message = "CLIENT_CERT_REQUIRED", clientCertRequiredMessage
		case r == ReasonClientCertInvalid:
			e.Code, e.Message = "CLIENT_CERT_INVALID", clientCertInvalidMessage
		case status == http.StatusForbidden:
			e.Code, e.Message = "INSUFFICIENT_PERMISSIONS", "Access denied. Check your API key permissions."
			if a.required != "" || a.model != "" {
				e.Details = &apikeyDetail{RequiredScope: a.required, Model: a.model}
			}
		case r == ReasonBadBody:
			e.Code, e.Message = "INVALID_REQUEST", badBodyMessage
		case r == ReasonBadRequest:
			e.Code, e.Message = "INVALID_REQUEST", badRequestMessage
		case r == ReasonRateLimited:
			e.Code, e.Message = "RATE_LIMIT_EXCEEDED", rateLimitedMessage
			e.Details = &apikeyDetail{RetryAfter: a.retry}
		}
		v = apikeyBody{Error: e}
	case ProfileMythIQ:
		b := mythiqBody{Message: "Invalid API key", Code: "authentication_error"}
		switch {
		case r == ReasonMissing:
			b.Message = "API key is missing"
		case status == http.StatusServiceUnavailable:
			b.Message, b.Code = unavailableMessage, "service_unavailable"
		case status == http.StatusForbidden:
			b.Message, b.Code = "API key does not have permission to access this resource", "permission_error"
		case r == ReasonBadBody:
			b.Message, b.Code = badBodyMessage, "invalid_request_error"
		case r == ReasonBadRequest:
			b.Message, b.Code = badRequestMessage, "invalid_request_error"
		case r == ReasonRateLimited:
			b.Message, b.Code = rateLimitedMessage, "rate_limit_error"
		}
		v = b
	case ProfileOpenAI:
		e := openaiError{Message: "Your API key is missing or invalid.", Type: "invalid_request_error", Code: "invalid_api_key"}
		switch {
		case r == ReasonMissing:
			e.Code = "missing_api_key"
		case status == http.StatusServiceUnavailable:
			e.Message, e.Type, e.Code = unavailableMessage, "server_error", "service_unavailable"
		case status == http.StatusForbidden:
			e.Message, e.Code = "You don't have permission to access this resource or model.", "insufficient_permissions"
			switch r {
			case ReasonModelNotAllowed:
				e.Code = "model_not_allowed"
			case ReasonClientCertRequired:
				e.Message, e.Code = clientCertRequiredMessage, "client_certificate_required"
			case ReasonClientCertInvalid:
				e.Message, e.Code = clientCertInvalidMessage, "client_certificate_invalid"
			}
		case r == ReasonBadBody:
			param := "model"
			e.Message, e.Param, e.Code = badBodyMessage, &param, "invalid_body"
		case r == ReasonBadRequest:
			e.Message, e.Code = badRequestMessage, "invalid_request"
		case r == ReasonRateLimited:
			e.Message, e.Type, e.Code = "Rate limit reached for requests", "requests", "rate_limit_exceeded"
		}
		v = openaiBody{Error: e}
	}
	return encodeBody(v)
}

// encodeBody is a body's JSON, without HTML escaping or a trailing newline.
func encodeBody(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// The values above are plain structs of strings, bools and ints.
		panic(fmt.Sprintf("authz: encode deny body: %v", err))
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

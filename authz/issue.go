package authz

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// ErrInvalidKeySpec is returned by Issue for a name, owner or scope it cannot accept.
var ErrInvalidKeySpec = errors.New("invalid key spec")

// KeySpec describes a key to issue.
type KeySpec struct {
	Name      string    // 1 to 64 printable ASCII characters, e.g. "Production App"
	Owner     string    // account id, 1 to 128 of letters, digits and -_.:@/
	Kind      Kind      // "" means KindProduct
	Models    []string  // model allow-list; empty: any model
	Plan      string    // rate-limit plan; empty: the default
	BoundCert string    // a SPIFFE ID or "sha256:<hex>" fingerprint the key is bound to
	Scopes    []string  // each 1 to 64 printable ASCII characters without spaces or commas
	ExpiresAt time.Time // zero: never expires
	CreatedBy string    // the id of the key that asked for this one, if any
}

// Issue makes a new key for spec: the plaintext key, to be shown once and then
// forgotten, and the record to store, which holds only the key's hash. Randomness comes
// from crypto/rand.
func (f Format) Issue(spec KeySpec, now time.Time) (key string, rec Record, err error) {
	if err := spec.validate(now); err != nil {
		return "", Record{}, err
	}
	if field := f.keyShaped(spec); field != "" {
		// Not quoted: the value is the thing to keep out of the error and the record.
		return "", Record{}, fmt.Errorf("%w: the %s looks like an API key; a key never goes in a record's fields", ErrInvalidKeySpec, field)
	}
	id, err := NewKeyID(nil)
	if err != nil {
		return "", Record{}, err
	}
	key, err = f.Generate(nil)
	if err != nil {
		return "", Record{}, err
	}
	scopes := append([]string{}, spec.Scopes...)
	slices.Sort(scopes)
	rec = Record{
		ID:        id,
		Name:      spec.Name,
		Owner:     spec.Owner,
		Kind:      spec.kind(),
		Models:    slices.Clone(spec.Models),
		Plan:      spec.Plan,
		BoundCert: spec.BoundCert,
		CreatedBy: spec.CreatedBy,
		Scopes:    slices.Compact(scopes),
		Hash:      HashKey(key),
		Hint:      f.Hint(key),
		CreatedAt: now.UTC().Truncate(time.Second),
	}
	if !spec.ExpiresAt.IsZero() {
		rec.ExpiresAt = spec.ExpiresAt.UTC().Truncate(time.Second)
	}
	return key, rec, nil
}

// NewKeyID returns a public key id: "key_" and 16 base62 characters from r (crypto/rand
// when r is nil).
func NewKeyID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	out := []byte("key_")
	var buf [32]byte
	for len(out) < 4+16 {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("generate key id: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < 4+16 {
				out = append(out, base62[b%62])
			}
		}
	}
	return string(out), nil
}

// ValidKeyID reports whether id has the shape NewKeyID gives, so it can be used in a
// store path as it is.
func ValidKeyID(id string) bool {
	if len(id) != 4+16 || !strings.HasPrefix(id, "key_") {
		return false
	}
	for i := 4; i < len(id); i++ {
		if !isAlnum(id[i]) {
			return false
		}
	}
	return true
}

// keyShaped names the first field of s that holds something Redact would replace, or "".
func (f Format) keyShaped(s KeySpec) string {
	shaped := func(v string) bool { return f.Redact(v) != v }
	switch {
	case shaped(s.Name):
		return "name"
	case shaped(s.Owner):
		return "owner"
	case shaped(s.BoundCert) && !validFingerprint(s.BoundCert):
		return "bound certificate"
	case slices.ContainsFunc(s.Scopes, shaped):
		return "scope"
	case slices.ContainsFunc(s.Models, shaped):
		return "model"
	}
	return ""
}

func (s KeySpec) kind() Kind {
	if s.Kind == "" {
		return KindProduct
	}
	return s.Kind
}

func (s KeySpec) validate(now time.Time) error {
	switch s.kind() {
	case KindProduct:
	case KindUser:
		if !s.ExpiresAt.IsZero() {
			return fmt.Errorf("%w: a user key is permanent and cannot expire", ErrInvalidKeySpec)
		}
	default:
		return fmt.Errorf("%w: kind must be %q or %q", ErrInvalidKeySpec, KindProduct, KindUser)
	}
	if s.Owner == "" {
		return fmt.Errorf("%w: every key needs an owner", ErrInvalidKeySpec)
	}
	if !printable(s.Name, 64, true) || strings.TrimSpace(s.Name) != s.Name {
		return fmt.Errorf("%w: name must be 1 to 64 printable ASCII characters, without leading or trailing spaces", ErrInvalidKeySpec)
	}
	for i := 0; i < len(s.Owner); i++ {
		if c := s.Owner[i]; !isAlnum(c) && !strings.ContainsRune("-_.:@/", rune(c)) {
			return fmt.Errorf("%w: owner may hold only letters, digits and -_.:@/", ErrInvalidKeySpec)
		}
	}
	if len(s.Owner) > 128 {
		return fmt.Errorf("%w: owner is longer than 128 characters", ErrInvalidKeySpec)
	}
	if err := ValidateScopes(s.Scopes); err != nil {
		return err
	}
	for _, m := range s.Models {
		if !printable(m, 128, false) || strings.Contains(m, ",") {
			return fmt.Errorf("%w: model %q must be 1 to 128 printable ASCII characters without spaces or commas", ErrInvalidKeySpec, m)
		}
	}
	if b := s.BoundCert; b != "" && !strings.HasPrefix(b, "spiffe://") && !validFingerprint(b) {
		return fmt.Errorf("%w: a bound certificate is a spiffe:// ID or sha256: and 64 hex digits", ErrInvalidKeySpec)
	}
	for i := 0; i < len(s.Plan); i++ {
		if c := s.Plan[i]; !isAlnum(c) && c != '-' && c != '_' || i >= 32 {
			return fmt.Errorf("%w: plan must be up to 32 letters, digits, '-' and '_'", ErrInvalidKeySpec)
		}
	}
	if !s.ExpiresAt.IsZero() && !s.ExpiresAt.After(now) {
		return fmt.Errorf("%w: expiry %s is not in the future", ErrInvalidKeySpec, s.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}

// ValidateScopes checks that each scope is 1 to 64 printable ASCII characters without
// spaces or commas (commas separate scopes in headers).
func ValidateScopes(scopes []string) error {
	for _, sc := range scopes {
		if (Format{}).Redact(sc) != sc {
			return fmt.Errorf("%w: a scope looks like an API key; a key never goes in a record's fields", ErrInvalidKeySpec)
		}
		if !printable(sc, 64, false) || strings.ContainsAny(sc, ", ") {
			return fmt.Errorf("%w: scope %q must be 1 to 64 printable ASCII characters without spaces or commas", ErrInvalidKeySpec, sc)
		}
	}
	return nil
}

func validFingerprint(s string) bool {
	hexPart, ok := strings.CutPrefix(strings.ToLower(s), "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	for _, c := range hexPart {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// printable reports whether s is 1 to max bytes of printable ASCII (space allowed when
// space is true).
func printable(s string, max int, space bool) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || (c == ' ' && !space) {
			return false
		}
	}
	return true
}

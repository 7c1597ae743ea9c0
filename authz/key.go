package authz

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// Key layout: a configurable prefix, then BodyLen characters from the base62 alphabet.
// The first RandomLen characters are random; the last ChecksumLen are the CRC-32 (IEEE)
// of the random part, written in base62, most significant digit first. A mistyped or
// invented key fails the checksum and is rejected without a store read.
const (
	BodyLen     = 32
	ChecksumLen = 6
	RandomLen   = BodyLen - ChecksumLen

	maxPrefixLen = 32
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// KeyHash is the SHA-256 of a whole key (prefix included). It is all the store ever holds.
type KeyHash [sha256.Size]byte

// HashKey returns the SHA-256 of key.
func HashKey(key string) KeyHash {
	var buf [maxPrefixLen + BodyLen]byte
	if len(key) <= len(buf) {
		// Avoid the heap copy of []byte(key) on the hot path.
		return sha256.Sum256(append(buf[:0], key...))
	}
	return sha256.Sum256([]byte(key))
}

// String returns the hash in lower-case hex.
func (h KeyHash) String() string { return hex.EncodeToString(h[:]) }

// ParseKeyHash parses the lower- or upper-case hex form written by String.
func ParseKeyHash(s string) (KeyHash, error) {
	var h KeyHash
	if hex.DecodedLen(len(s)) != len(h) {
		return h, fmt.Errorf("key hash: want %d hex characters, got %d", 2*len(h), len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("key hash: %w", err)
	}
	return h, nil
}

// Format is the shape of keygate's API keys for one deployment: the prefix, then 32
// base62 characters whose last 6 are a checksum of the rest.
type Format struct {
	prefix string
}

// NewFormat returns the key format with the given prefix, such as "mgx-sk-", "mx4-sk-"
// or "mutx_live_". The prefix must be 1 to 32 characters of letters, digits, '-' and '_'.
func NewFormat(prefix string) (Format, error) {
	if prefix == "" || len(prefix) > maxPrefixLen {
		return Format{}, fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidPrefix, maxPrefixLen)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; !isAlnum(c) && c != '-' && c != '_' {
			return Format{}, fmt.Errorf("%w: %q may hold only letters, digits, '-' and '_'", ErrInvalidPrefix, prefix)
		}
	}
	return Format{prefix: prefix}, nil
}

// Prefix returns the key prefix.
func (f Format) Prefix() string { return f.prefix }

// Generate returns a new key with RandomLen characters drawn uniformly from r
// (crypto/rand when r is nil) and its checksum.
func (f Format) Generate(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	out := make([]byte, 0, len(f.prefix)+BodyLen)
	out = append(out, f.prefix...)
	// Rejection sampling keeps the characters uniform: 248 = 4*62 is the largest
	// multiple of 62 that fits in a byte.
	var buf [64]byte
	for n := 0; n < RandomLen; {
		if _, err := io.ReadFull(r, buf[:]); err != nil {
			return "", fmt.Errorf("generate key: %w", err)
		}
		for _, b := range buf {
			if b >= 248 {
				continue
			}
			out = append(out, base62[b%62])
			if n++; n == RandomLen {
				break
			}
		}
	}
	out = appendChecksum(out, string(out[len(f.prefix):]))
	return string(out), nil
}

// checkResult is the outcome of Format.check.
type checkResult uint8

const (
	keyOK checkResult = iota
	keyMalformed
	keyBadChecksum
)

// check reports whether key has this format's prefix, length and alphabet, and whether its
// checksum holds. It runs in constant time with respect to the key's characters.
func (f Format) check(key string) checkResult {
	if len(key) != len(f.prefix)+BodyLen || key[:len(f.prefix)] != f.prefix {
		return keyMalformed
	}
	body := key[len(f.prefix):]
	for i := 0; i < len(body); i++ {
		if !isAlnum(body[i]) {
			return keyMalformed
		}
	}
	var want [ChecksumLen]byte
	appendChecksum(want[:0], body[:RandomLen])
	var diff byte
	for i := range want {
		diff |= want[i] ^ body[RandomLen+i]
	}
	if diff != 0 {
		return keyBadChecksum
	}
	return keyOK
}

// Valid reports whether key has this format and a correct checksum.
func (f Format) Valid(key string) bool { return f.check(key) == keyOK }

// Hint returns a short, non-secret reminder of key for listings: the prefix, "...",
// and the last 4 characters (which belong to the checksum).
func (f Format) Hint(key string) string {
	if len(key) < 4 {
		return f.prefix + "..."
	}
	return f.prefix + "..." + key[len(key)-4:]
}

// Redact returns s with every key-shaped value in it replaced by its hint, so that a key
// pasted where it does not belong (a path, an id, a header, a JSON field, an error) never
// reaches a log. It looks at runs of letters and digits of at least BodyLen characters
// and replaces a run when this format's prefix (in any letter case) comes right before
// its body, whatever the checksum says, or when the run is not all hex digits: the
// random characters are the secret whatever precedes them, while all-hex runs are
// hashes and request ids (a random base62 body is all hex with a probability below
// 1e-14). The prefix is replaced with the run. The zero Format redacts by the second
// rule only. s itself is returned, without allocating, when nothing matches.
func (f Format) Redact(s string) string {
	var b []byte
	done := 0 // s[:done] is in b already
	for i := 0; i < len(s); {
		if !isAlnum(s[i]) {
			i++
			continue
		}
		j := i + 1
		for j < len(s) && isAlnum(s[j]) {
			j++
		}
		if j-i >= BodyLen {
			if start, ok := f.keyAt(s, i, j); ok {
				start = max(start, done) // a prefix may overlap the run redacted before
				if b == nil {
					b = make([]byte, 0, len(s))
				}
				b = append(b, s[done:start]...)
				b = append(b, f.prefix...)
				b = append(b, "..."...)
				b = append(b, s[j-4:j]...)
				done = j
			}
		}
		i = j
	}
	if b == nil {
		return s
	}
	return string(append(b, s[done:]...))
}

// keyAt reports whether the run of letters and digits s[i:j] is to be redacted, and
// where the redacted span starts: before the prefix when the prefix precedes the body.
func (f Format) keyAt(s string, i, j int) (int, bool) {
	// A prefix may end in letters or digits ("sk"), which then open the run.
	head, tail := f.prefix, ""
	for len(head) > 0 && isAlnum(head[len(head)-1]) {
		head, tail = head[:len(head)-1], head[len(head)-1:]+tail
	}
	if f.prefix != "" && j-i-len(tail) >= BodyLen && i >= len(head) &&
		strings.EqualFold(s[i-len(head):i], head) && strings.EqualFold(s[i:i+len(tail)], tail) {
		return i - len(head), true
	}
	for k := i; k < j; k++ {
		if c := s[k]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return i, true
		}
	}
	return i, false
}

// appendChecksum appends the base62 CRC-32 (IEEE) of random. The loop over the string
// keeps the hot path free of the []byte copy crc32.ChecksumIEEE would need.
func appendChecksum(dst []byte, random string) []byte {
	sum := ^uint32(0)
	for i := 0; i < len(random); i++ {
		sum = crc32.IEEETable[byte(sum)^random[i]] ^ sum>>8
	}
	sum = ^sum
	var digits [ChecksumLen]byte
	for i := ChecksumLen - 1; i >= 0; i-- {
		digits[i] = base62[sum%62]
		sum /= 62
	}
	return append(dst, digits[:]...)
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

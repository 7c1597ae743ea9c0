package authz

import (
	"bytes"
	"crypto/rand"
	"hash/crc32"
	"strings"
	"testing"
)

func mustFormat(t testing.TB, prefix string) Format {
	t.Helper()
	f, err := NewFormat(prefix)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestNewFormat(t *testing.T) {
	for name, tc := range map[string]struct {
		prefix string
		ok     bool
	}{
		"magicx":       {"mgx-sk-", true},
		"mx4":          {"mx4-sk-", true},
		"mutx":         {"mutx_live_", true},
		"empty":        {"", false},
		"space":        {"mgx sk-", false},
		"slash":        {"mgx/sk-", false},
		"too long":     {strings.Repeat("a", 33), false},
		"longest":      {strings.Repeat("a", 32), true},
		"non-ascii":    {"mgx-sk-é", false},
		"single digit": {"7", true},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewFormat(tc.prefix)
			if (err == nil) != tc.ok {
				t.Fatalf("NewFormat(%q) error = %v, want ok=%v", tc.prefix, err, tc.ok)
			}
		})
	}
}

func TestGenerateShape(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	seen := map[string]bool{}
	for range 200 {
		key, err := f.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(key, "mgx-sk-") || len(key) != len("mgx-sk-")+BodyLen {
			t.Fatalf("key %q: wrong prefix or length", key)
		}
		for _, c := range []byte(key[len("mgx-sk-"):]) {
			if !isAlnum(c) {
				t.Fatalf("key %q: non-alphanumeric %q", key, c)
			}
		}
		if !f.Valid(key) {
			t.Fatalf("generated key %q fails its own checksum", key)
		}
		if seen[key] {
			t.Fatalf("duplicate key after %d", len(seen))
		}
		seen[key] = true
	}
}

func TestGenerateIsUniform(t *testing.T) {
	// Bytes 248..255 must be rejected, not folded onto the first 8 characters.
	f := mustFormat(t, "p-")
	key, err := f.Generate(bytes.NewReader(bytes.Repeat([]byte{255, 0}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := key[2:2+RandomLen], strings.Repeat("0", RandomLen); got != want {
		t.Fatalf("random part %q, want %q", got, want)
	}
}

func TestChecksumCatchesTypos(t *testing.T) {
	f := mustFormat(t, "mx4-sk-")
	key, err := f.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(key)
	caught, total := 0, 0
	for i := len("mx4-sk-"); i < len(body); i++ {
		orig := body[i]
		for j := 0; j < len(base62); j++ {
			if base62[j] == orig {
				continue
			}
			body[i] = base62[j]
			total++
			if f.check(string(body)) == keyBadChecksum {
				caught++
			}
		}
		body[i] = orig
	}
	// CRC-32 catches every single-character substitution in the random part; a change in
	// the checksum digits themselves is caught unless it lands on another valid encoding,
	// which base62 of a 32-bit value never does for a single digit.
	if caught != total {
		t.Fatalf("checksum caught %d of %d single-character typos", caught, total)
	}
}

func TestFormatCheck(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	good, err := f.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		key  string
		want checkResult
	}{
		"valid":          {good, keyOK},
		"wrong prefix":   {"mx4-sk-" + good[7:], keyMalformed},
		"no prefix":      {good[7:], keyMalformed},
		"short":          {good[:len(good)-1], keyMalformed},
		"long":           {good + "a", keyMalformed},
		"space inside":   {good[:12] + " " + good[13:], keyMalformed},
		"dash in body":   {good[:12] + "-" + good[13:], keyMalformed},
		"non-ascii":      {good[:12] + "\xc3" + good[13:], keyMalformed},
		"empty":          {"", keyMalformed},
		"prefix only":    {"mgx-sk-", keyMalformed},
		"upper prefix":   {"MGX-SK-" + good[7:], keyMalformed},
		"typo in random": {good[:10] + flip(good[10]) + good[11:], keyBadChecksum},
	} {
		t.Run(name, func(t *testing.T) {
			if got := f.check(tc.key); got != tc.want {
				t.Fatalf("check = %d, want %d", got, tc.want)
			}
		})
	}
}

func flip(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}

func TestHint(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	key, _ := f.Generate(rand.Reader)
	hint := f.Hint(key)
	if want := "mgx-sk-..." + key[len(key)-4:]; hint != want {
		t.Fatalf("Hint = %q, want %q", hint, want)
	}
	if strings.Contains(hint, key[7:7+RandomLen]) {
		t.Fatal("hint reveals the random part")
	}
}

func TestKeyHashRoundTrip(t *testing.T) {
	h := HashKey("mgx-sk-anything")
	back, err := ParseKeyHash(h.String())
	if err != nil || back != h {
		t.Fatalf("ParseKeyHash(String()) = %v, %v", back, err)
	}
	for _, bad := range []string{"", "zz", h.String()[:62], h.String() + "00", strings.Repeat("g", 64)} {
		if _, err := ParseKeyHash(bad); err == nil {
			t.Errorf("ParseKeyHash(%q) accepted", bad)
		}
	}
	// The long-key path must agree with the stack-buffer path.
	long := strings.Repeat("x", 100)
	if HashKey(long) != HashKey(string([]byte(long))) {
		t.Fatal("HashKey differs for equal inputs")
	}
}

func FuzzFormatCheck(f *testing.F) {
	format := mustFormat(f, "mgx-sk-")
	for _, s := range []string{"", "mgx-sk-", "mgx-sk-a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6", "mgx-sk-00000000000000000000000000000000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		r := format.check(key)
		if r == keyOK {
			// Anything accepted must have exactly the documented shape.
			if len(key) != len("mgx-sk-")+BodyLen || !strings.HasPrefix(key, "mgx-sk-") {
				t.Fatalf("accepted %q", key)
			}
			var sum [ChecksumLen]byte
			appendChecksum(sum[:0], key[7:7+RandomLen])
			if want := crc32.ChecksumIEEE([]byte(key[7 : 7+RandomLen])); decode62(sum[:]) != want {
				t.Fatalf("checksum of %q disagrees with hash/crc32", key)
			}
			if string(sum[:]) != key[len(key)-ChecksumLen:] {
				t.Fatalf("accepted %q with a wrong checksum", key)
			}
		}
	})
}

func decode62(digits []byte) uint32 {
	var v uint64
	for _, d := range digits {
		v = v*62 + uint64(strings.IndexByte(base62, d))
	}
	return uint32(v)
}

func TestChecksumIsCRC32(t *testing.T) {
	for _, s := range []string{"", "a", "abcdefghijklmnopqrstuvwxyz", "00000000000000000000000000"} {
		var got [ChecksumLen]byte
		appendChecksum(got[:0], s)
		if decode62(got[:]) != crc32.ChecksumIEEE([]byte(s)) {
			t.Errorf("checksum(%q) = %s, not CRC-32 %d", s, got, crc32.ChecksumIEEE([]byte(s)))
		}
	}
}

func TestRedact(t *testing.T) {
	f := mustFormat(t, "mgx-sk-")
	key, err := f.Generate(nil)
	if err != nil {
		t.Fatal(err)
	}
	body := key[len("mgx-sk-"):]
	bad := key[:len(key)-1] + flip(key[len(key)-1]) // checksum fails
	hint := f.Hint(key)
	hexBody := strings.Repeat("0123456789abcdef", 2)
	for name, tc := range map[string]struct{ in, want string }{
		"nothing":                   {"/api-keys/key_0123456789abcdef", "/api-keys/key_0123456789abcdef"},
		"empty":                     {"", ""},
		"the key":                   {key, hint},
		"bad checksum":              {bad, f.Hint(bad)},
		"in a path":                 {"/api-keys/" + key + "/rotate", "/api-keys/" + hint + "/rotate"},
		"twice":                     {key + " " + key, hint + " " + hint},
		"prefix doubled":            {"mgx-sk-" + key, "mgx-sk-" + hint},
		"upper-case prefix":         {"MGX-SK-" + body, hint},
		"mixed-case prefix":         {"Mgx-Sk-" + body, hint},
		"no prefix":                 {"id=" + body, "id=" + hint},
		"other prefix":              {"mutx_live_" + body, "mutx_live_" + hint},
		"trailing letters":          {key + "xyz", "mgx-sk-..." + body[len(body)-1:] + "xyz"},
		"leading letters":           {"abc" + body, "mgx-sk-..." + body[len(body)-4:]},
		"inside a word":             {"abcmgx-sk-" + body, "abcmgx-sk-..." + body[len(body)-4:]},
		"after newline escape":      {`\n` + key, `\n` + hint},
		"all-hex body, prefixed":    {"mgx-sk-" + hexBody, "mgx-sk-...cdef"},
		"all-hex run, no prefix":    {"req_" + hexBody, "req_" + hexBody},
		"sha256 fingerprint":        {"sha256:" + hexBody + hexBody, "sha256:" + hexBody + hexBody},
		"31 characters":             {body[:31], body[:31]},
		"long run":                  {strings.Repeat("zZ", 300000), "mgx-sk-...zZzZ"},
		"overlapping prefix":        {strings.Repeat("Z", 40) + "mgx-sk-" + body, "mgx-sk-...Zmgx" + "mgx-sk-..." + body[len(body)-4:]},
		"json":                      {`{"id":"` + key + `"}`, `{"id":"` + hint + `"}`},
		"percent-encoded elsewhere": {"%2F" + key, "%2F" + hint},
	} {
		t.Run(name, func(t *testing.T) {
			got := f.Redact(tc.in)
			if got != tc.want {
				t.Fatalf("Redact(%.80q)\n= %.80q\nwant %.80q", tc.in, got, tc.want)
			}
			if tc.want != tc.in && strings.Contains(got, body[:RandomLen]) {
				t.Fatal("the random part survived")
			}
		})
	}
	// A prefix that ends in letters opens the run.
	sk := mustFormat(t, "sk")
	k2, _ := sk.Generate(nil)
	if got := sk.Redact("x " + k2); got != "x "+sk.Hint(k2) {
		t.Fatalf("alnum prefix: %q", got)
	}
	// The zero Format redacts runs only.
	if got := (Format{}).Redact("p=" + key); got != "p=mgx-sk-..."+key[len(key)-4:] {
		t.Fatalf("zero format: %q", got)
	}
	clean := "/api-keys/key_0123456789abcdef/rotate req_" + hexBody
	if n := testing.AllocsPerRun(100, func() { _ = f.Redact(clean) }); n != 0 {
		t.Fatalf("Redact allocates %v times when nothing matches", n)
	}
}

// FuzzRedact puts a fresh key into arbitrary text and checks that its random part never
// survives Redact, and that nothing key-shaped does.
func FuzzRedact(f *testing.F) {
	format := mustFormat(f, "mgx-sk-")
	for _, s := range []string{"", "/api-keys/", "mgx-sk-", "MGX-SK-", "abc", `\u003c`, "%2D", strings.Repeat("a", 40)} {
		f.Add(s, uint(3), false)
	}
	f.Fuzz(func(t *testing.T, s string, pos uint, upper bool) {
		key, err := format.Generate(nil)
		if err != nil {
			t.Fatal(err)
		}
		if upper {
			key = strings.ToUpper(key[:7]) + key[7:]
		}
		at := int(pos % uint(len(s)+1))
		in := s[:at] + key + s[at:]
		out := format.Redact(in)
		if strings.Contains(out, key[7:7+RandomLen]) {
			t.Fatalf("Redact(%q) = %q keeps the random part", in, out)
		}
		if again := format.Redact(out); again != out {
			t.Fatalf("Redact left something key-shaped: %q -> %q", out, again)
		}
	})
}

package certs

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
)

// XFCCElement is one element of an x-forwarded-client-cert header: what one proxy hop
// says about the client certificate it saw.
type XFCCElement struct {
	By, Hash, Cert, Chain, Subject string
	URI, DNS                       []string
}

// ParseXFCC parses Envoy's x-forwarded-client-cert header: elements separated by
// commas, each a ';'-separated list of key=value pairs, where a value may be a quoted
// string holding commas, semicolons and \" escapes. Keys are case-insensitive; unknown
// keys are ignored.
func ParseXFCC(h string) ([]XFCCElement, error) {
	var (
		out  []XFCCElement
		cur  XFCCElement
		key  strings.Builder
		val  strings.Builder
		inK  = true
		quot bool
		seen bool // the current element has a pair
	)
	// flushPair ends the pair read so far; a quoted value keeps its spaces.
	flushPair := func(quoted bool) error {
		k := strings.ToLower(strings.TrimSpace(key.String()))
		v := val.String()
		if !quoted {
			v = strings.TrimSpace(v)
		}
		key.Reset()
		val.Reset()
		inK = true
		if k == "" {
			if v != "" {
				return fmt.Errorf("%w: value without a key", ErrBadXFCC)
			}
			return nil
		}
		seen = true
		switch k {
		case "by":
			cur.By = v
		case "hash":
			cur.Hash = v
		case "cert":
			cur.Cert = v
		case "chain":
			cur.Chain = v
		case "subject":
			cur.Subject = v
		case "uri":
			cur.URI = append(cur.URI, v)
		case "dns":
			cur.DNS = append(cur.DNS, v)
		}
		return nil
	}
	quoted := false // the value being read started with a quote
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case quot:
			switch c {
			case '\\':
				if i+1 >= len(h) {
					return nil, fmt.Errorf("%w: dangling escape", ErrBadXFCC)
				}
				i++
				val.WriteByte(h[i])
			case '"':
				quot = false
				// Only separators or spaces may follow a closing quote.
				for i+1 < len(h) && h[i+1] == ' ' {
					i++
				}
				if i+1 < len(h) && h[i+1] != ';' && h[i+1] != ',' {
					return nil, fmt.Errorf("%w: text after a quoted value", ErrBadXFCC)
				}
			default:
				val.WriteByte(c)
			}
		case inK && c == '=':
			inK = false
			quoted = false
			for i+1 < len(h) && h[i+1] == ' ' {
				i++
			}
			if i+1 < len(h) && h[i+1] == '"' {
				i++
				quot, quoted = true, true
			}
		case c == ';' || c == ',':
			if inK && strings.TrimSpace(key.String()) != "" {
				return nil, fmt.Errorf("%w: key without a value", ErrBadXFCC)
			}
			if err := flushPair(quoted); err != nil {
				return nil, err
			}
			quoted = false
			if c == ',' {
				if !seen {
					return nil, fmt.Errorf("%w: empty element", ErrBadXFCC)
				}
				out = append(out, cur)
				cur, seen = XFCCElement{}, false
			}
		case inK:
			key.WriteByte(c)
		default:
			if c == '"' {
				return nil, fmt.Errorf("%w: quote inside an unquoted value", ErrBadXFCC)
			}
			val.WriteByte(c)
		}
	}
	if quot {
		return nil, fmt.Errorf("%w: unterminated quote", ErrBadXFCC)
	}
	if inK && strings.TrimSpace(key.String()) != "" {
		return nil, fmt.Errorf("%w: key without a value", ErrBadXFCC)
	}
	if err := flushPair(quoted); err != nil {
		return nil, err
	}
	if !seen {
		if len(out) == 0 {
			return nil, fmt.Errorf("%w: empty header", ErrBadXFCC)
		}
		return nil, fmt.Errorf("%w: empty element", ErrBadXFCC)
	}
	return append(out, cur), nil
}

// CertDER returns the DER of the element's Cert (URL-escaped PEM).
func (e XFCCElement) CertDER() ([]byte, error) {
	if e.Cert == "" {
		return nil, fmt.Errorf("%w: the element has no Cert", ErrBadXFCC)
	}
	raw, err := url.PathUnescape(e.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadXFCC, err)
	}
	return firstCertificate([]byte(raw))
}

// ParseClientCert parses an RFC 9440 Client-Cert header: a structured-field byte
// sequence, ":" base64(DER) ":". It returns the DER.
func ParseClientCert(h string) ([]byte, error) {
	h = strings.TrimSpace(h)
	if len(h) < 2 || h[0] != ':' || h[len(h)-1] != ':' {
		return nil, fmt.Errorf("%w: want :base64:", ErrBadClientCert)
	}
	der, err := base64.StdEncoding.DecodeString(h[1 : len(h)-1])
	if err != nil || len(der) == 0 {
		return nil, fmt.Errorf("%w: bad base64", ErrBadClientCert)
	}
	return der, nil
}

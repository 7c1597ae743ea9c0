package authz

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// SourceLookup is a KeyLookup that shares its budget of store reads for uncached keys
// fairly between clients: the engine hands it Request.Source. A lookup without a
// source (the admin API, a request with no client address) uses only the shared budget.
type SourceLookup interface {
	KeyLookup
	LookupFrom(ctx context.Context, hash KeyHash, source Source) (Record, error)
}

// Source is the client a request comes from, as the adapter knows it: the address
// (an IP, or "ip:port") and the verified client certificate's fingerprint. It is kept
// raw, so a check whose key is cached never pays for naming it; Key names it when a
// store needs to.
type Source struct {
	Addr        string
	Fingerprint string // of a verified client certificate; "" when none
}

// IsZero reports whether nothing is known of the client.
func (s Source) IsZero() bool { return s.Addr == "" && s.Fingerprint == "" }

// Key is ClientSource for s.
func (s Source) Key() string {
	return ClientSource(s.Addr, Peer{Verified: s.Fingerprint != "", Fingerprint: s.Fingerprint})
}

// SourceRefusedError is returned by a SourceLookup that refuses an uncached key from a
// client that presented too many unknown keys recently (a spray). The engine answers
// 429 with Retry-After.
type SourceRefusedError struct {
	RetryAfter time.Duration
}

func (e *SourceRefusedError) Error() string {
	return fmt.Sprintf("too many unknown keys from this client; retry after %s", e.RetryAfter.Round(time.Second))
}

// ClientSource names the client a request comes from, for the miss budget: the
// verified client certificate's fingerprint when there is one, else the client's IP
// address without its port, an IPv6 address by its /64 (one host's worth of addresses).
// addr is "ip:port" or "ip"; "" when unknown.
func ClientSource(addr string, p Peer) string {
	if p.Verified && p.Fingerprint != "" {
		return p.Fingerprint
	}
	if addr == "" {
		return ""
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		if len(addr) > 64 {
			addr = addr[:64]
		}
		return "addr:" + addr
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		pfx, _ := ip.Prefix(64)
		return pfx.String()
	}
	return ip.String()
}

// lookupFrom looks hash up for source, through SourceLookup when l is one.
func lookupFrom(ctx context.Context, l KeyLookup, hash KeyHash, source Source) (Record, error) {
	if sl, ok := l.(SourceLookup); ok && !source.IsZero() {
		return sl.LookupFrom(ctx, hash, source)
	}
	return l.Lookup(ctx, hash)
}

package authz

import (
	"net"
	"net/netip"
	"testing"
)

func TestClientSource(t *testing.T) {
	cert := Peer{Presented: true, Verified: true, Fingerprint: "sha256:ab"}
	for _, tc := range []struct {
		addr string
		peer Peer
		want string
	}{
		{"192.0.2.1:5555", Peer{}, "192.0.2.1"},
		{"192.0.2.1:6666", Peer{}, "192.0.2.1"}, // the port is not the client
		{"192.0.2.1", Peer{}, "192.0.2.1"},
		{"[::ffff:192.0.2.1]:80", Peer{}, "192.0.2.1"}, // IPv4-mapped
		{"[2001:db8:1:2:aaaa::1]:80", Peer{}, "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:bbbb::9]:80", Peer{}, "2001:db8:1:2::/64"}, // same /64
		{"[fe80::1%eth0]:80", Peer{}, "fe80::/64"},
		{"192.0.2.1:5555", cert, "sha256:ab"},
		{"192.0.2.1:5555", Peer{Presented: true, Fingerprint: "sha256:ab"}, "192.0.2.1"}, // unverified
		{"", Peer{}, ""},
		{"unix:/run/envoy.sock", Peer{}, "addr:unix:/run/envoy.sock"},
	} {
		if got := ClientSource(tc.addr, tc.peer); got != tc.want {
			t.Errorf("ClientSource(%q, %+v) = %q, want %q", tc.addr, tc.peer, got, tc.want)
		}
	}
}

// FuzzClientSource: any address names a bounded source, the same for every port of
// one IP address.
func FuzzClientSource(f *testing.F) {
	for _, s := range []string{"192.0.2.1:80", "[2001:db8::1]:443", "[fe80::1%eth0]:1", "unix:/x", "", "::ffff:10.0.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		src := ClientSource(addr, Peer{})
		if len(src) > 70 || (addr != "" && src == "") {
			t.Fatalf("ClientSource(%q) = %q", addr, src)
		}
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() == "" {
				other := net.JoinHostPort(host, "1")
				if got := ClientSource(other, Peer{}); got != src {
					t.Fatalf("%q and %q name different sources: %q, %q", addr, other, src, got)
				}
			}
		}
	})
}

package authz

import "testing"

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

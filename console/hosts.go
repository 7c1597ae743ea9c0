package console

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// LoopbackHosts guards a plain-HTTP admin listener bound to a loopback address against
// DNS rebinding: a page on a name the attacker points at 127.0.0.1 is same-origin with
// itself, so the Origin checks pass and it could drive the sign-in or the admin API
// from the operator's browser. Such a listener can only be reached as localhost or a
// loopback address, so any other Host is answered 421 MISDIRECTED_REQUEST. Over TLS the
// browser's certificate check already refuses a foreign name.
func LoopbackHosts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoopbackHost(r.Host) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMisdirectedRequest)
			_, _ = w.Write([]byte(`{"success":false,"error":{"code":"MISDIRECTED_REQUEST","message":"this listener answers only as localhost or a loopback address"}}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// LoopbackHost reports whether a Host header (with or without a port) names localhost
// or a loopback address: "localhost", "127.0.0.1:9003", "[::1]:9003".
func LoopbackHost(host string) bool {
	if h, port, err := net.SplitHostPort(host); err == nil {
		if strings.Trim(port, "0123456789") != "" {
			return false
		}
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

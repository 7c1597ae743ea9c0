package console

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestLoopbackHosts(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	h := LoopbackHosts(ok)
	for host, want := range map[string]int{
		"127.0.0.1:9003":               http.StatusNoContent,
		"127.0.0.1":                    http.StatusNoContent,
		"127.1.2.3:9003":               http.StatusNoContent,
		"localhost:9003":               http.StatusNoContent,
		"LOCALHOST":                    http.StatusNoContent,
		"[::1]:9003":                   http.StatusNoContent,
		"[::ffff:127.0.0.1]:9003":      http.StatusNoContent,
		"rebind.attacker.example:9003": http.StatusMisdirectedRequest,
		"rebind.attacker.example":      http.StatusMisdirectedRequest,
		"localhost.attacker.example":   http.StatusMisdirectedRequest,
		"127.0.0.1.nip.io:9003":        http.StatusMisdirectedRequest,
		"localhost.:9003":              http.StatusMisdirectedRequest,
		"10.0.0.1:9003":                http.StatusMisdirectedRequest,
		"[fe80::1%lo]:9003":            http.StatusMisdirectedRequest,
		"":                             http.StatusMisdirectedRequest,
		"0x7f000001:9003":              http.StatusMisdirectedRequest,
	} {
		req := httptest.NewRequest("GET", "/console/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %q: %d, want %d", host, rec.Code, want)
		}
	}
}

func FuzzLoopbackHost(f *testing.F) {
	for _, s := range []string{"127.0.0.1:9003", "localhost", "[::1]:1", "a.example", "[::1", "::1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if LoopbackHost(host) && !LoopbackHost(host) {
			t.Fatal("not deterministic")
		}
		// Whatever passes names localhost or a loopback address and nothing else.
		if LoopbackHost(host) {
			for _, c := range host {
				if !(c == ':' || c == '.' || c == '[' || c == ']' || c >= '0' && c <= '9' || c >= 'a' && c <= 'f' ||
					c >= 'A' && c <= 'F' || c == 'l' || c == 'o' || c == 'c' || c == 'h' || c == 's' || c == 't' ||
					c == 'L' || c == 'O' || c == 'C' || c == 'H' || c == 'S' || c == 'T') {
					t.Fatalf("%q passed", host)
				}
			}
		}
	})
}

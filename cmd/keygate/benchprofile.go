//go:build benchprofile

package main

import (
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// Built only with -tags benchprofile, for scripts/bench: KEYGATE_BENCH_PPROF names a
// loopback address that serves the Go profiler (/debug/pprof/), so the harness can take
// a CPU profile of serve under load. Release builds have no profiler.
func init() {
	addr := os.Getenv("KEYGATE_BENCH_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		panic("KEYGATE_BENCH_PPROF must be a loopback ip:port")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { _ = http.ListenAndServe(addr, mux) }()
}

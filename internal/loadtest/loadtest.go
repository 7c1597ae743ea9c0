// Package loadtest holds what keygate's load harnesses (scripts/bench, scripts/benchtls,
// scripts/soak) share: a latency histogram and free loopback addresses.
package loadtest

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Histogram keeps latencies in 1 µs buckets up to 1 s, and one overflow bucket. It is
// safe for concurrent use.
type Histogram struct {
	mu      sync.Mutex
	buckets []int64
	n       int64
	maxSeen time.Duration
}

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram { return &Histogram{buckets: make([]int64, 1_000_001)} }

// Add records one latency.
func (h *Histogram) Add(d time.Duration) {
	i := min(int(d/time.Microsecond), len(h.buckets)-1)
	h.mu.Lock()
	h.buckets[i]++
	h.n++
	h.maxSeen = max(h.maxSeen, d)
	h.mu.Unlock()
}

// Quantile returns the latency below which a fraction q of the recorded ones fall, to
// the microsecond; past 1 s, the largest seen.
func (h *Histogram) Quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	want := int64(q * float64(h.n))
	var seen int64
	for i, c := range h.buckets[:len(h.buckets)-1] {
		if seen += c; seen > want {
			return time.Duration(i) * time.Microsecond
		}
	}
	return h.maxSeen
}

// Max returns the largest latency recorded.
func (h *Histogram) Max() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxSeen
}

// FreeAddr returns a loopback address with a free port.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Download writes the body of a GET of url (a pprof endpoint, say) to file; a status
// other than 200 is an error.
func Download(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

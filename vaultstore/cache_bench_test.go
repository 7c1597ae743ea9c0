package vaultstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

// generated is a record source for the cache's benchmarks: it answers Lookup with a
// record made from the hash, shaped like the records Format.Issue makes (id, name,
// owner among 1,000, one of five scope sets, a hint, creation and, for one key in
// four, expiry times), so the cache is filled through its real Lookup path without a
// Vault server and without holding the records twice.
type generated struct{}

var benchScopes = [][]string{{"chat:completions"}, {"chat:completions", "models:read"},
	{"embeddings"}, {"chat:completions", "embeddings", "models:read"}, {"files", "models:read"}}

func genHash(i int) authz.KeyHash {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(i))
	return authz.KeyHash(sha256.Sum256(b[:]))
}

func (generated) Lookup(_ context.Context, h authz.KeyHash) (authz.Record, error) {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	id := []byte("key_0000000000000000")
	for i := range 16 {
		id[4+i] = alphabet[int(h[i])%len(alphabet)]
	}
	n := binary.LittleEndian.Uint32(h[16:])
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n%1e6) * time.Second)
	rec := authz.Record{ID: string(id), Name: "service key " + strconv.Itoa(int(n%100000)), Owner: fmt.Sprintf("acct_%04d", n%1000),
		Kind: authz.KindProduct, Scopes: append([]string(nil), benchScopes[n%5]...), Hash: h,
		Hint: "mgx-sk-..." + string(id[16:20]), CreatedAt: created}
	if n%4 == 0 {
		rec.ExpiresAt = created.Add(365 * 24 * time.Hour)
	}
	return rec, nil
}

func (generated) ReadChanges(context.Context) (Changes, error) { return Changes{}, nil }
func (generated) readCap() time.Duration                       { return time.Second }

func newGeneratedCache(b *testing.B, size int) *Cache {
	c, err := newCache(generated{}, CacheConfig{Size: size, MissRate: 1e9, MissBurst: 1e9})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkCacheHitGenerated is BenchmarkCacheHit without Vault: a cached record.
func BenchmarkCacheHitGenerated(b *testing.B) {
	c := newGeneratedCache(b, 1000)
	h := genHash(1)
	if _, err := c.Lookup(context.Background(), h); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Lookup(context.Background(), h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheMemory fills a cache with KEYGATE_BENCH_KEYS records (default 100,000)
// through Lookup and reports the heap and the resident memory each cached key costs.
func BenchmarkCacheMemory(b *testing.B) {
	n := 100_000
	if v := os.Getenv("KEYGATE_BENCH_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rss0 := rss(b)
		c := newGeneratedCache(b, n)
		ctx := context.Background()
		for i := range n {
			if _, err := c.Lookup(ctx, genHash(i)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-B/key")
		b.ReportMetric(float64(rss(b)-rss0)/float64(n), "rss-B/key")
		b.ReportMetric(float64(rss(b))/(1<<20), "rss-MiB")
		debug.FreeOSMemory() // what the runtime keeps from the fill's garbage, returned
		b.ReportMetric(float64(rss(b))/(1<<20), "rss-released-MiB")
		if got := c.Stats().Misses; got != uint64(n) {
			b.Fatalf("%d misses, want %d", got, n)
		}
		runtime.KeepAlive(c)
	}
}

// rss is the process's resident set, from /proc/self/status.
func rss(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for l := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

package vaultstore

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/authz"
)

// deadAddr is a loopback address where nothing listens: connections are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// hungAddr accepts connections and never answers, as a frozen Vault does.
func hungAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return "http://" + l.Addr().String()
}

// failoverStore returns a Store whose client tries addrs in order.
func failoverStore(t *testing.T, base string, addrs ...string) (*Store, *Failover) {
	t.Helper()
	var f *Failover
	client := vault(t).Client(t, func(next http.RoundTripper) http.RoundTripper {
		var err error
		if f, err = NewFailover(next, addrs, time.Second); err != nil {
			t.Fatal(err)
		}
		return f
	})
	client.SetMaxRetries(0)
	// A 1 s lookup deadline rather than 150 ms: a busy test machine must not make the
	// live node miss its share.
	s, err := New(Config{Client: client, Path: base, LookupTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

func TestFailoverReadsWithinTheLookupBudget(t *testing.T) {
	good, _ := newStore(t, nil)
	key, rec := issue(t, authz.KeySpec{Name: "failover"})
	ctx := context.Background()
	if err := good.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	dead, hung := deadAddr(t), hungAddr(t)
	s, f := failoverStore(t, good.base, dead, hung, vault(t).Addr)
	// Refused, then hung for its share of the lookup deadline, then the live
	// node: the lookup succeeds only if the hung node did not take the whole deadline.
	got, err := s.Lookup(ctx, authz.HashKey(key))
	if err != nil || got.ID != rec.ID {
		t.Fatalf("Lookup through failover = %v, %v", got.ID, err)
	}
	if f.Current() != vault(t).Addr {
		t.Fatalf("current address %s, want the one that answered, %s", f.Current(), vault(t).Addr)
	}
	// The address that answered is tried first from now on: no time lost on the others.
	for range 20 {
		if _, err := s.Lookup(ctx, authz.HashKey(key)); err != nil {
			t.Fatal(err)
		}
	}
	// No address answers: the lookup fails within its deadline, as unavailable.
	s2, _ := failoverStore(t, good.base, dead, hung, hungAddr(t))
	_, err = s2.Lookup(ctx, authz.HashKey(key))
	if !errors.Is(err, ErrVaultUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lookup with no live address: %v, want ErrVaultUnavailable at the lookup's deadline", err)
	}
}

func TestFailoverWrites(t *testing.T) {
	good, _ := newStore(t, nil)
	ctx := context.Background()
	// A refused connection sent nothing: the write goes to the next address.
	s, _ := failoverStore(t, good.base, deadAddr(t), vault(t).Addr)
	_, rec := issue(t, authz.KeySpec{Name: "written after a refusal"})
	if err := s.Create(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if got, err := good.Get(ctx, rec.ID); err != nil || got.Hash != rec.Hash {
		t.Fatalf("record not written: %v", err)
	}
	// A node that took the write and did not answer may have applied it: the write is
	// not sent again, the caller gets the error (and can re-run, as every command can).
	s, f := failoverStore(t, good.base, hungAddr(t), vault(t).Addr)
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := s.kv.Put(cctx, good.base+"/not-sent-twice", map[string]any{"n": 1}); err == nil {
		t.Fatal("write to a hung node succeeded")
	}
	if sec, err := good.kv.Get(ctx, good.base+"/not-sent-twice"); err == nil {
		t.Fatalf("write reached the second address: %v", sec.Data)
	}
	// The next request starts with the address after the one that failed.
	if f.Current() != vault(t).Addr {
		t.Fatalf("current address %s after a failure, want %s", f.Current(), vault(t).Addr)
	}
}

func TestNewFailoverRejectsBadAddresses(t *testing.T) {
	for _, addrs := range [][]string{
		nil,
		{""},
		{"vault:8200"},
		{"ftp://vault:8200"},
		{"http://"},
		{"http://user:pw@vault:8200"},
		{"http://vault:8200/v1"},
		{"http://vault:8200?x=1"},
		{"http://vault:8200", "http://VAULT:8200"},
	} {
		_, err := NewFailover(http.DefaultTransport, addrs, 0)
		if err == nil {
			t.Errorf("NewFailover(%q) accepted", addrs)
			continue
		}
		if strings.Contains(err.Error(), "pw") {
			t.Errorf("error repeats a password: %v", err)
		}
	}
}

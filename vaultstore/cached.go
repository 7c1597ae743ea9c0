package vaultstore

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
	"unique"

	"github.com/keygate/keygate/authz"
)

// recordSource is what a Cache reads: a *Store, or, in the cache's own benchmarks, a
// stand-in that serves generated records through the same calls.
type recordSource interface {
	Lookup(ctx context.Context, hash authz.KeyHash) (authz.Record, error)
	ReadChanges(ctx context.Context) (Changes, error)
	readCap() time.Duration
}

// entry is one cached answer: a key's record, or that no key has the hash. It holds
// only what deciding a check needs, compactly: the hash is the cache's key; the id and
// name are one string; owner, kind, plan, bound certificate and replacement id are one
// shared handle (one copy per distinct combination in the process, collected when no
// entry uses it); scope and model lists are shared with every record that has the same
// list; times are seconds and nanoseconds. The creation time and the hint, which no
// check reads, are not kept.
type entry struct {
	idName  string // the id followed by the name: one allocation for both
	idLen   uint32
	found   bool
	strs    unique.Handle[recordStrings]
	scopes  *[]string // shared; never modified
	models  *[]string
	expires instant
	revoked instant
	at      int64 // when it was read (UnixNano of the cache's clock)
}

// recordStrings are the record's strings that many records share.
type recordStrings struct {
	owner, kind, plan, boundCert, replacedBy string
}

// instant is a time.Time without its location and monotonic reading. nsec -1 is the
// zero time.
type instant struct {
	sec  int64
	nsec int32
}

func instantOf(t time.Time) instant {
	if t.IsZero() {
		return instant{nsec: -1}
	}
	return instant{sec: t.Unix(), nsec: int32(t.Nanosecond())}
}

func (i instant) time() time.Time {
	if i.nsec < 0 {
		return time.Time{}
	}
	return time.Unix(i.sec, int64(i.nsec)).UTC()
}

func newEntry(rec *authz.Record, found bool, at time.Time) entry {
	if !found {
		return entry{at: at.UnixNano()}
	}
	return entry{
		idName: rec.ID + rec.Name, idLen: uint32(len(rec.ID)), found: true,
		strs: unique.Make(recordStrings{owner: rec.Owner, kind: string(rec.Kind), plan: rec.Plan,
			boundCert: rec.BoundCert, replacedBy: rec.ReplacedBy}),
		scopes: lists.intern(rec.Scopes), models: lists.intern(rec.Models),
		expires: instantOf(rec.ExpiresAt), revoked: instantOf(rec.RevokedAt), at: at.UnixNano(),
	}
}

// record is the cached record of hash. Its Scopes and Models are shared: callers must
// not modify them.
func (e *entry) record(hash authz.KeyHash) authz.Record {
	strs := e.strs.Value()
	return authz.Record{
		ID: e.idName[:e.idLen], Name: e.idName[e.idLen:], Owner: strs.owner, Kind: authz.Kind(strs.kind),
		Scopes: *e.scopes, Hash: hash, ExpiresAt: e.expires.time(), RevokedAt: e.revoked.time(),
		ReplacedBy: strs.replacedBy, Models: *e.models, Plan: strs.plan, BoundCert: strs.boundCert,
	}
}

// age is how long ago the entry was read, by the cache's clock.
func (e *entry) age(now time.Time) time.Duration { return time.Duration(now.UnixNano() - e.at) }

// lists shares equal scope and model lists among cached records. It keeps at most
// maxLists distinct lists (keys are issued with a few scope sets in practice); past
// that, a record keeps its own copy.
var lists = listTable{m: map[string]*[]string{}}

const maxLists = 16384

type listTable struct {
	mu sync.Mutex
	m  map[string]*[]string // by the list joined with NUL
}

func (t *listTable) intern(l []string) *[]string {
	if len(l) == 0 {
		return &noList
	}
	k := strings.Join(l, "\x00")
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.m[k]; ok && slices.Equal(*p, l) {
		return p
	}
	p := new([]string)
	*p = slices.Clone(l)
	if len(t.m) < maxLists {
		t.m[k] = p
	}
	return p
}

var noList []string

package envoy

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate/authz"
)

// recordView is the part of an allowed answer that depends only on a key record's id,
// name, owner and scopes: the upstream and client headers that name the key, and the
// dynamic metadata. It is a rendering, not a decision: every check is still decided
// by the engine, and a view is used only for a record whose four fields are equal to
// the ones it was made from, so a rotated key or changed scopes get a new view.
//
// A view is shared by concurrent answers: its messages and bytes are never changed
// after it is made (gRPC only reads them to marshal).
type recordView struct {
	id, name, owner string
	scopes          []string                     // a copy of the record's
	upstream        [3]*corev3.HeaderValueOption // x-api-key-id, -name, -scopes
	client          [3]*corev3.HeaderValueOption // X-API-Key-ID, -Name, -Scopes
	metadata        *structpb.Struct             // key_id, key_name, owner, scopes
	wire            *viewWire                    // the three above, encoded; nil if they cannot be
}

func newRecordView(rec *authz.Record) *recordView {
	v := &recordView{id: rec.ID, name: rec.Name, owner: rec.Owner, scopes: slices.Clone(rec.Scopes)}
	scopes := strings.Join(rec.Scopes, ",")
	hs := new([6]header)
	v.upstream = [3]*corev3.HeaderValueOption{hs[0].set(HeaderKeyID, rec.ID), hs[1].set(HeaderKeyName, rec.Name),
		hs[2].set(HeaderKeyScopes, scopes)}
	v.client = [3]*corev3.HeaderValueOption{hs[3].set("X-API-Key-ID", rec.ID), hs[4].set("X-API-Key-Name", rec.Name),
		hs[5].set("X-API-Key-Scopes", scopes)}
	scopeValues := make([]*structpb.Value, len(rec.Scopes))
	for i, sc := range rec.Scopes {
		scopeValues[i] = structpb.NewStringValue(sc)
	}
	v.metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
		"key_id":   structpb.NewStringValue(rec.ID),
		"key_name": structpb.NewStringValue(rec.Name),
		"owner":    structpb.NewStringValue(rec.Owner),
		"scopes":   structpb.NewListValue(&structpb.ListValue{Values: scopeValues}),
	}}
	v.wire = encodeView(v)
	return v
}

// of reports whether v renders rec.
func (v *recordView) of(rec *authz.Record) bool {
	return v.id == rec.ID && v.name == rec.Name && v.owner == rec.Owner && slices.Equal(v.scopes, rec.Scopes)
}

// viewSlots is the number of views kept: a fixed table, so memory is bounded
// whatever the number of keys (about 1.5 KB a view with its encoded bytes).
const viewSlots = 4096

// recordViews keeps the most recent view per slot, the slot chosen by key id. A
// collision or a changed record only costs a new view.
type recordViews struct {
	seed  maphash.Seed
	slots [viewSlots]atomic.Pointer[recordView]
}

func newRecordViews() *recordViews { return &recordViews{seed: maphash.MakeSeed()} }

// get returns the view of rec, made now if the slot holds another.
func (vs *recordViews) get(rec *authz.Record) *recordView {
	slot := &vs.slots[maphash.String(vs.seed, rec.ID)%viewSlots]
	if v := slot.Load(); v != nil && v.of(rec) {
		return v
	}
	v := newRecordView(rec)
	slot.Store(v)
	return v
}

package envoy

import (
	"context"
	"fmt"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// Codec returns the gRPC server option under which allowed answers are encoded from
// their prebuilt parts (the bytes of a record view, the server's headers to remove)
// rather than walked field by field; every other message, in either direction, is
// encoded and decoded as gRPC's proto codec does. The bytes are a CheckResponse equal
// to the one Check returns (TestWireEqualsProto).
func Codec() grpc.ServerOption { return grpc.ForceServerCodecV2(codec{}) }

// codec is gRPC's proto codec, with a fast path for *allowedResponse.
type codec struct{}

var _ encoding.CodecV2 = codec{}

func (codec) Name() string { return grpcproto.Name }

func (codec) Marshal(v any) (mem.BufferSlice, error) {
	if a, ok := v.(*allowedResponse); ok && a.wireable() {
		// Pooled whatever the size (gRPC's codec allocates below 1 KB): an answer is
		// one buffer, returned to the pool once written.
		size := a.wireSize()
		pool := mem.DefaultBufferPool()
		buf := pool.Get(size)
		*buf = a.appendWire((*buf)[:0])
		return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
	}
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("proto: failed to marshal, message is %T, want proto.Message", v)
	}
	// As gRPC's proto codec: the size once, then the cached sizes.
	size := proto.Size(m)
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	out, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	*buf = out
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (codec) Unmarshal(data mem.BufferSlice, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("failed to unmarshal, message is %T, want proto.Message", v)
	}
	if len(data) == 1 {
		// One buffer (a request in one HTTP/2 frame): read in place. Both decoders copy
		// what they keep; gRPC frees the buffer after.
		return unmarshal(data[0].ReadOnlyData(), v, m)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return unmarshal(buf.ReadOnlyData(), v, m)
}

// unmarshal decodes b into v (m is v as a proto.Message). A Check request is decoded
// only as far as a check reads it, unless decodeInput leaves it to proto.Unmarshal;
// proto.Unmarshal's error is the one returned for bytes either refuses.
func unmarshal(b []byte, v any, m proto.Message) error {
	if w, ok := v.(*wireRequest); ok {
		var f wireFields
		if decodeInput(b, &f, &w.in) == nil {
			w.decoded = true
			return nil
		}
	}
	return proto.Unmarshal(b, m)
}

func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	case protoadapt.MessageV2:
		return v
	}
	return nil
}

// authorizationDesc is envoy.service.auth.v3.Authorization with a Check handler that
// returns allowed answers as *allowedResponse (a CheckResponse that also knows its
// bytes, for codec), other answers as *CheckResponse.
var authorizationDesc = grpc.ServiceDesc{
	ServiceName: "envoy.service.auth.v3.Authorization",
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "envoy/service/auth/v3/external_auth.proto",
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Server)
	if interceptor == nil {
		// Nothing else sees the request: under Codec, only what a check reads of it is
		// decoded.
		w := new(wireRequest)
		if err := dec(w); err != nil {
			return nil, err
		}
		return s.answerInput(ctx, w.input())
	}
	in := new(authv3.CheckRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.answer(ctx, req.(*authv3.CheckRequest))
	})
}

// The field numbers of the messages an allowed answer is made of.
const (
	fieldCheckStatus        protowire.Number = 1 // CheckResponse.status
	fieldCheckOK            protowire.Number = 3 // CheckResponse.ok_response
	fieldCheckMetadata      protowire.Number = 4 // CheckResponse.dynamic_metadata
	fieldOKHeaders          protowire.Number = 2 // OkHttpResponse.headers
	fieldOKHeadersToRemove  protowire.Number = 5 // OkHttpResponse.headers_to_remove
	fieldOKResponseHeaders  protowire.Number = 6 // OkHttpResponse.response_headers_to_add
	fieldOptionHeader       protowire.Number = 1 // HeaderValueOption.header
	fieldOptionAppendAction protowire.Number = 3 // HeaderValueOption.append_action
	fieldHeaderKey          protowire.Number = 1 // HeaderValue.key
	fieldHeaderValue        protowire.Number = 2 // HeaderValue.value
	overwriteIfExistsOrAdd                   = uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)
	statusOKWire                             = "\x0a\x00" // status: an empty google.rpc.Status (code 0)
	sizeStatusOKWire                         = len(statusOKWire)
	sizeAppendAction                         = 2 // its tag and its value (2), one byte each
)

// headerSize is the encoded size of a HeaderValueOption field holding key: value
// (overwrite if exists, or add), tag included.
func headerSize(key, value string) int {
	n := headerBodySize(key, value)
	return protowire.SizeTag(fieldOKHeaders) + protowire.SizeBytes(n)
}

func headerBodySize(key, value string) int {
	hv := stringSize(fieldHeaderKey, key) + stringSize(fieldHeaderValue, value)
	return protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(hv) + sizeAppendAction
}

func stringSize(n protowire.Number, s string) int {
	if s == "" {
		return 0 // proto3: an empty string is not encoded
	}
	return protowire.SizeTag(n) + protowire.SizeBytes(len(s))
}

// appendHeader appends a HeaderValueOption as field n: key: value, overwrite if
// exists, or add; byte for byte what proto.Marshal makes of header.set's option.
func appendHeader(b []byte, n protowire.Number, key, value string) []byte {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(headerBodySize(key, value)))
	b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(stringSize(fieldHeaderKey, key)+stringSize(fieldHeaderValue, value)))
	if key != "" {
		b = protowire.AppendTag(b, fieldHeaderKey, protowire.BytesType)
		b = protowire.AppendString(b, key)
	}
	if value != "" {
		b = protowire.AppendTag(b, fieldHeaderValue, protowire.BytesType)
		b = protowire.AppendString(b, value)
	}
	b = protowire.AppendTag(b, fieldOptionAppendAction, protowire.VarintType)
	return protowire.AppendVarint(b, overwriteIfExistsOrAdd)
}

// wireable reports whether a's bytes can be made from its parts: the view's were
// encoded (proto.Marshal refuses a string that is not UTF-8, and so must the fast
// path: the answer then fails as it always did), and the per-check strings are UTF-8.
func (a *allowedResponse) wireable() bool {
	return a.view.wire != nil && utf8.ValidString(a.requestID)
}

// okSize is the encoded size of the OkHttpResponse.
func (a *allowedResponse) okSize() int {
	n := len(a.view.wire.upstream) + headerSize(HeaderRequestID, a.requestID) + len(a.remove) +
		len(a.view.wire.client) + headerSize(clientRequestID, a.requestID)
	for i := range a.nrate {
		n += headerSize(a.rate[i].hv.Key, a.rate[i].hv.Value)
	}
	return n
}

func (a *allowedResponse) wireSize() int {
	ok := a.okSize()
	return sizeStatusOKWire + protowire.SizeTag(fieldCheckOK) + protowire.SizeBytes(ok) + len(a.view.wire.metadata)
}

// appendWire appends the CheckResponse a is, in the order proto.Marshal writes it
// (fields by number, the oneof last).
func (a *allowedResponse) appendWire(b []byte) []byte {
	b = append(b, statusOKWire...)
	b = append(b, a.view.wire.metadata...)
	b = protowire.AppendTag(b, fieldCheckOK, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(a.okSize()))
	b = append(b, a.view.wire.upstream...)
	b = appendHeader(b, fieldOKHeaders, HeaderRequestID, a.requestID)
	b = append(b, a.remove...)
	for i := range a.nrate {
		b = appendHeader(b, fieldOKResponseHeaders, a.rate[i].hv.Key, a.rate[i].hv.Value)
	}
	b = append(b, a.view.wire.client...)
	return appendHeader(b, fieldOKResponseHeaders, clientRequestID, a.requestID)
}

// viewWire is a record view's parts of an allowed answer, encoded: the upstream
// headers (OkHttpResponse field 2), the client headers (field 6) and the dynamic
// metadata (CheckResponse field 4), each with its tags.
type viewWire struct {
	upstream, client, metadata []byte
}

// encodeView encodes v's parts, or returns nil when proto.Marshal refuses them (a
// string that is not UTF-8).
func encodeView(v *recordView) *viewWire {
	det := proto.MarshalOptions{Deterministic: true}
	up, err := det.Marshal(&authv3.OkHttpResponse{Headers: v.upstream[:]})
	if err != nil {
		return nil
	}
	client, err := det.Marshal(&authv3.OkHttpResponse{ResponseHeadersToAdd: v.client[:]})
	if err != nil {
		return nil
	}
	md, err := det.Marshal(&authv3.CheckResponse{DynamicMetadata: v.metadata})
	if err != nil {
		return nil
	}
	return &viewWire{upstream: up, client: client, metadata: md}
}

// encodeRemove encodes the headers to remove (OkHttpResponse field 5).
func encodeRemove(names []string) []byte {
	b, err := proto.Marshal(&authv3.OkHttpResponse{HeadersToRemove: names})
	if err != nil {
		panic(err) // constant ASCII names
	}
	return b
}

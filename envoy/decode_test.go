package envoy

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/keygate/keygate/authz"
)

// envoyShaped is testdata's Envoy-shaped CheckRequest.
func envoyShaped(tb testing.TB) *authv3.CheckRequest {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "envoy", "check_request.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(raw, &req); err != nil {
		tb.Fatal(err)
	}
	return &req
}

func marshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// sameDecode asserts that decodeInput agrees with proto.Unmarshal on b: it accepts only
// what proto.Unmarshal accepts, and then reads what inputOf reads of proto.Unmarshal's
// message. It leaves to proto.Unmarshal only what it does not follow (more read headers
// than maxReadHeaders, deeper nesting than maxDecodeDepth). It returns whether
// proto.Unmarshal accepted b.
func sameDecode(t *testing.T, b []byte) bool {
	t.Helper()
	var f wireFields
	var got checkInput
	errFast := decodeInput(b, &f, &got)
	var req authv3.CheckRequest
	errProto := proto.Unmarshal(b, &req)
	switch {
	case errFast == nil && errProto != nil:
		t.Fatalf("decodeInput accepts what proto.Unmarshal refuses (%v)", errProto)
	case errFast != nil && errProto == nil:
		if n := readHeaders(&req); n <= maxReadHeaders && depthOf(req.ProtoReflect()) < maxDecodeDepth-8 {
			t.Fatalf("decodeInput refuses what proto.Unmarshal accepts (%d read headers): %v", n, &req)
		}
		return true
	case errProto != nil:
		return false
	}
	want := inputOf(&req)
	h := req.GetAttributes().GetRequest().GetHttp()
	g, w := got.req, want.req
	for _, p := range [][2]*string{{&g.Authorization, &w.Authorization}, {&g.APIKey, &w.APIKey}, {&g.RequestID, &w.RequestID},
		{&g.MethodOverride, &w.MethodOverride}, {&g.ContentType, &w.ContentType}, {&g.ForwardedHost, &w.ForwardedHost},
		{&g.Forwarded, &w.Forwarded}, {&got.fwd.xfcc, &want.fwd.xfcc}, {&got.fwd.clientCert, &want.fwd.clientCert}} {
		// The headers map has no order, so neither have the values joined from it.
		if !joinedEq(*p[0], *p[1]) {
			t.Fatalf("read %q, want %q (of %v)", *p[0], *p[1], &req)
		}
		*p[0], *p[1] = "", ""
	}
	if g.BodyPartial != w.BodyPartial && bothInHeaders(h) {
		g.BodyPartial = w.BodyPartial
	}
	got.req, want.req = g, w
	got.fwd, want.fwd = forwarded{}, forwarded{}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded\n%+v\nwant\n%+v\nof %v", got, want, &req)
	}
	return true
}

// readHeaders counts the read headers of req, as decodeInput keeps them.
func readHeaders(req *authv3.CheckRequest) int {
	h := req.GetAttributes().GetRequest().GetHttp()
	n := 0
	for k := range h.GetHeaders() {
		if isRead([]byte(k)) {
			n++
		}
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if isRead([]byte(hv.GetKey())) {
			n++
		}
	}
	return n
}

// depthOf is how deep m's messages nest (m: 1).
func depthOf(m protoreflect.Message) int {
	deepest := 0
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
				deepest = max(deepest, 1+depthOf(v.Message()))
				return true
			})
		case fd.IsMap():
			deepest = max(deepest, 1)
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				deepest = max(deepest, depthOf(v.List().Get(i).Message()))
			}
		case fd.Message() != nil:
			deepest = max(deepest, depthOf(v.Message()))
		}
		return true
	})
	return deepest + 1
}

// Field numbers on the way to the fields a check reads.
const (
	nAttributes = 1  // CheckRequest.attributes
	nSource     = 1  // AttributeContext.source
	nDest       = 2  // AttributeContext.destination
	nRequest    = 4  // AttributeContext.request
	nMetadata   = 11 // AttributeContext.metadata_context
	nHTTP       = 2  // Request.http
	nHeaders    = 3  // HttpRequest.headers
	nHeaderMap  = 13 // HttpRequest.header_map
)

// nest wraps content as the field path (outermost first), each a message field.
func nest(content []byte, path ...protowire.Number) []byte {
	for i := len(path) - 1; i >= 0; i-- {
		content = protowire.AppendBytes(protowire.AppendTag(nil, path[i], protowire.BytesType), content)
	}
	return content
}

func str(n protowire.Number, s string) []byte {
	return protowire.AppendString(protowire.AppendTag(nil, n, protowire.BytesType), s)
}

func entry(k, v string) []byte { return nest(append(str(1, k), str(2, v)...), nHeaders) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// inHTTP puts fields in attributes.request.http.
func inHTTP(fields ...[]byte) []byte { return nest(cat(fields...), nAttributes, nRequest, nHTTP) }

// decodeCases are requests of every class decodeInput must read as proto.Unmarshal
// does; ok says whether proto.Unmarshal accepts them (asserted too).
func decodeCases(t testing.TB) []struct {
	name string
	b    []byte
	ok   bool
} {
	shaped := envoyShaped(t)
	shaped.Attributes.Request.Http.Headers["authorization"] = "Bearer kg_test"
	base := marshal(t, shaped)
	raw := proto.Clone(shaped).(*authv3.CheckRequest)
	h := raw.Attributes.Request.Http
	for k, v := range h.Headers {
		if h.HeaderMap == nil {
			h.HeaderMap = &corev3.HeaderMap{}
		}
		h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	h.Headers = nil
	h.RawBody = []byte(`{"model":"gpt"}`)
	raw.Attributes.Source.Certificate = "-----BEGIN%20CERTIFICATE-----%0A"
	md, _ := structpb.NewStruct(map[string]any{"a": []any{"x", 1.5, map[string]any{"b": true}}})
	raw.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters": md}}
	raw.Attributes.ContextExtensions = map[string]string{"route": "chat"}
	rawB := marshal(t, raw)
	badUTF8 := string([]byte{0xff, 'x'})
	v := str(3, "leaf") // Value.string_value
	for range 100 {
		v = nest(nest(cat(str(1, "k"), nest(v, 2)), 1), 5) // Value{struct_value: {fields: {k: v}}}
	}
	structC := nest(cat(str(1, "k"), nest(v, 2)), 1)
	deepMeta := nest(nest(cat(str(1, "f"), nest(structC, 2)), 1), nAttributes, nMetadata)
	manyAuth := []byte{}
	for i := range 20 {
		manyAuth = append(manyAuth, entry(mixedN("authorization", i), "v")...)
	}
	var every, everyRaw []byte // every read header, in several cases
	for i, n := range readNames {
		for _, v := range []string{n, strings.ToUpper(n), mixedN(n, i), strings.ReplaceAll(n, "-", "_")} {
			every = append(every, entry(v, "v"+v)...)
			everyRaw = append(everyRaw, nest(nest(cat(str(1, v), str(2, "true")), 1), nHeaderMap)...)
		}
	}
	for i, n := range readNames { // one at a time, as decodeInput keeps maxReadHeaders
		every = cat(every, inHTTP(entry(mixedN(n, i+1), "true")))
	}
	return []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"each read header", cat(inHTTP(entry(headerXFCC, "x")), inHTTP(entry(headerPartialBody, "true")),
			inHTTP(nest(nest(cat(str(1, "X-Envoy-Auth-Partial-Body"), str(3, "true")), 1), nHeaderMap))), true},
		{"every read header", inHTTP(every), true},
		{"every read header in header_map", inHTTP(everyRaw), true},
		{"envoy-shaped", base, true},
		{"raw headers, raw body, certificate, metadata", rawB, true},
		{"empty", nil, true},
		{"two requests merge", cat(base, rawB), true},
		{"last map entry of a key wins", cat(base, inHTTP(entry("authorization", "Bearer last"))), true},
		{"map entries of one name in two cases are both read", inHTTP(entry("Authorization", "a"), entry("authorization", "b")), true},
		{"map entry without key or value", inHTTP(nest(nil, nHeaders), nest(str(2, "v"), nHeaders), nest(str(1, "x-api-key"), nHeaders)), true},
		{"map entry with repeated key and unknown fields", inHTTP(nest(cat(str(1, "x"), str(1, "x-api-key"), str(9, "?"), str(2, "k1"), str(2, "k2")), nHeaders)), true},
		{"header_map merges", cat(inHTTP(nest(nest(str(1, "authorization"), 1), nHeaderMap)), inHTTP(nest(nest(cat(str(1, "x-api-key"), str(2, "v"), str(3, "raw")), 1), nHeaderMap))), true},
		{"last method wins", inHTTP(str(2, "GET"), str(2, "POST")), true},
		{"body and raw body", inHTTP(str(11, "text"), protowire.AppendBytes(protowire.AppendTag(nil, 12, protowire.BytesType), nil)), true},
		{"socket address then pipe", nest(cat(nest(str(2, "10.0.0.1"), 1), nest(str(1, "/tmp/s"), 2)), nAttributes, nSource, 1), true},
		{"pipe then socket address", nest(cat(nest(str(1, "/tmp/s"), 2), nest(str(2, "10.0.0.1"), 1)), nAttributes, nSource, 1), true},
		{"socket addresses merge", nest(cat(nest(str(2, "10.0.0.1"), 1), nest(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 443), 1)), nAttributes, nSource, 1), true},
		{"named port replaces port", nest(nest(cat(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1<<33+7), str(4, "https")), 1), nAttributes, nSource, 1), true},
		{"port over 32 bits", nest(nest(protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1<<33+7), 1), nAttributes, nSource, 1), true},
		{"known field of another wire type is unknown", cat(protowire.AppendVarint(protowire.AppendTag(nil, nAttributes, protowire.VarintType), 5), inHTTP(protowire.AppendFixed32(protowire.AppendTag(nil, 2, protowire.Fixed32Type), 1))), true},
		{"group as an unknown field", cat(base, protowire.AppendTag(nil, 99, protowire.StartGroupType), str(1, "x"), protowire.AppendTag(nil, 99, protowire.EndGroupType)), true},
		{"packed and unpacked size", inHTTP(protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 3)), true},
		{"deep metadata", cat(base, deepMeta), true},
		{"many read headers", inHTTP(manyAuth), true},
		{"truncated", base[:len(base)-3], false},
		{"oversize length", []byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, false},
		{"field number 0", []byte{0x00, 0x01}, false},
		{"end group at top level", protowire.AppendTag(nil, 5, protowire.EndGroupType), false},
		{"unmatched group", cat(protowire.AppendTag(nil, 99, protowire.StartGroupType), protowire.AppendTag(nil, 98, protowire.EndGroupType)), false},
		{"wire type 6", []byte{0x0e}, false},
		{"bad varint", []byte{0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, false},
		{"invalid UTF-8 in a read header", inHTTP(entry("authorization", "Bearer "+badUTF8)), false},
		{"invalid UTF-8 in a header name no check reads", inHTTP(entry("x-"+badUTF8, "v")), false},
		{"invalid UTF-8 in header_map", inHTTP(nest(nest(str(2, badUTF8), 1), nHeaderMap)), false},
		{"invalid UTF-8 in raw_value is bytes", inHTTP(nest(nest(cat(str(1, "authorization"), str(3, badUTF8)), 1), nHeaderMap)), true},
		{"invalid UTF-8 in the body", inHTTP(str(11, badUTF8)), false},
		{"invalid UTF-8 in raw_body is bytes", inHTTP(str(12, badUTF8)), true},
		{"invalid UTF-8 in the unread scheme", inHTTP(str(6, badUTF8)), false},
		{"invalid UTF-8 in the destination", nest(nest(nest(str(2, badUTF8), 1), 1), nAttributes, nDest), false},
		{"invalid UTF-8 in a context extension", nest(nest(str(2, badUTF8), 1), nAttributes, 10), false},
		{"invalid UTF-8 deep in metadata", nest(nest(nest(str(3, badUTF8), 2), 1), nAttributes, nMetadata, 1), false},
		{"invalid UTF-8 in a named port", nest(nest(str(4, badUTF8), 1), nAttributes, nSource, 1), false},
		{"bad packed varint in time", nest(nest(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte{0xff}), 1), nAttributes, nRequest), true},
		{"truncated timestamp", nest([]byte{0x0a, 0x02, 0x08, 0xff}, nAttributes, nRequest), false},
		{"truncated map entry", inHTTP([]byte{0x1a, 0x03, 0x0a, 0x05, 'x'}), false},
		{"field number too large", []byte{0xf8, 0xff, 0xff, 0xff, 0x1f, 0x00}, false},
	}
}

// mixedN is the i-th case variant of an ASCII name.
func mixedN(name string, i int) string {
	b := []byte(name)
	for j := range b {
		if i>>(j%8)&1 == 1 && 'a' <= b[j] && b[j] <= 'z' {
			b[j] -= 'a' - 'A'
		}
	}
	return string(b)
}

func TestReadNamesFitIsRead(t *testing.T) {
	for _, n := range readNames {
		if len(n) > maxReadName || !isRead([]byte(strings.ToUpper(n))) {
			t.Fatalf("%s is not read", n)
		}
	}
}

// Every class of request is decoded as proto.Unmarshal decodes it, and refused when it
// refuses it.
func TestDecodeInputAgreesWithProto(t *testing.T) {
	for _, c := range decodeCases(t) {
		t.Run(c.name, func(t *testing.T) {
			if ok := sameDecode(t, c.b); ok != c.ok {
				t.Fatalf("proto.Unmarshal accepts: %v, want %v", ok, c.ok)
			}
			// Only what decodeInput does not follow is left to proto.Unmarshal.
			var in checkInput
			if err := decodeInput(c.b, new(wireFields), &in); c.ok && (err == nil) == (c.name == "deep metadata" || c.name == "many read headers" || strings.HasPrefix(c.name, "every")) {
				t.Fatalf("decodeInput: %v", err)
			}
		})
	}
}

// FuzzDecodeInput: for any bytes, decodeInput accepts only what proto.Unmarshal accepts,
// and reads what a check reads of proto.Unmarshal's message.
func FuzzDecodeInput(f *testing.F) {
	for _, c := range decodeCases(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameDecode(t, b)
	})
}

// The codec reads a request over gRPC as proto.Unmarshal would: a refused one fails
// with gRPC's own error for bytes proto.Unmarshal refuses, the others are decided.
func TestCodecRefusesWhatProtoRefuses(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(Codec())
	newServer(t, newEngine(t, staticLookup{}, authz.ProfileMagicx), Options{}).Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	for _, c := range decodeCases(t) {
		var out authv3.CheckResponse
		err := conn.Invoke(context.Background(), authv3.Authorization_Check_FullMethodName, rawMessage(c.b), &out,
			grpc.ForceCodecV2(rawCodec{}))
		if c.ok && (err != nil || out.GetDeniedResponse().GetStatus().GetCode() != 401) {
			t.Fatalf("%s: %v, %v; want a 401 denial", c.name, &out, err)
		}
		if !c.ok && (status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "failed to unmarshal")) {
			t.Fatalf("%s: %v, want gRPC's unmarshal error", c.name, err)
		}
	}
}

// rawMessage is a request's bytes, sent as they are (rawCodec).
type rawMessage []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(rawMessage))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// BenchmarkDecodeCheck is decoding the Envoy-shaped request (with a Bearer key) as the
// gRPC server does: what a check reads (Codec), and the whole message (proto.Unmarshal
// and requestFrom).
func BenchmarkDecodeCheck(b *testing.B) {
	req := envoyShaped(b)
	req.Attributes.Request.Http.Headers["authorization"] = "Bearer kg_test_0123456789"
	data := marshal(b, req)
	b.Run("input", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w := new(wireRequest)
			if err := (codec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, w); err != nil || !w.decoded {
				b.Fatal(err)
			}
		}
	})
	b.Run("proto", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := new(authv3.CheckRequest)
			if err := proto.Unmarshal(data, m); err != nil {
				b.Fatal(err)
			}
			in := inputOf(m)
			_ = in
		}
	})
}

// BenchmarkServerCheckWire is a check from the request's bytes to the answer's, as the
// gRPC server runs it under Codec without its transport: decoding what a check reads
// (input), or the whole request with proto.Unmarshal as before decodeInput (proto);
// then the check and the answer's encoding. -sdk: with the OTel SDK meter provider;
// policy: with scripts/bench's policy and local rate-limit plan.
func BenchmarkServerCheckWire(b *testing.B) {
	for _, name := range []string{"input", "proto", "input-sdk", "policy-sdk"} {
		b.Run(name, func(b *testing.B) {
			if strings.HasSuffix(name, "-sdk") { // with the OTel SDK meter provider serve installs
				prev := otel.GetMeterProvider()
				otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
				defer otel.SetMeterProvider(prev)
			}
			s, req := benchServerWith(b, name == "policy-sdk")
			data := marshal(b, req)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				var resp any
				var err error
				if name != "proto" {
					w := new(wireRequest)
					if err := unmarshal(data, w, w); err != nil || !w.decoded {
						b.Fatal(err)
					}
					resp, err = s.answerInput(ctx, w.input())
				} else {
					m := new(authv3.CheckRequest)
					if err := proto.Unmarshal(data, m); err != nil {
						b.Fatal(err)
					}
					resp, err = s.answer(ctx, m)
				}
				if _, ok := resp.(*allowedResponse); !ok || err != nil {
					b.Fatal(resp, err)
				}
				out, err := codec{}.Marshal(resp)
				if err != nil {
					b.Fatal(err)
				}
				out.Free()
			}
		})
	}
}

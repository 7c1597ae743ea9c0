package main

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// skimCodec is gRPC's proto codec for the load generator, except that of a
// CheckResponse with an ok_response it reads only that the answer allows: the servers'
// answers differ in size (the no-op's is empty, keygate's carries headers and
// metadata), and decoding them whole costs the generator more for the larger one, a
// cost the proxy forwarding an allowed request does not pay in Go. Any other answer is
// decoded whole.
type skimCodec struct{ encoding.CodecV2 }

// fieldOK is CheckResponse.ok_response.
const fieldOK protowire.Number = 3

func (c skimCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*authv3.CheckResponse)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	b := data.Materialize()
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			break
		}
		if num == fieldOK && typ == protowire.BytesType {
			r.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}
			return nil
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			break
		}
		rest = rest[n+m:]
	}
	return proto.Unmarshal(b, r)
}

package envoy

import (
	"errors"
	"strings"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/keygate/keygate/authz"
)

// checkInput is all a check reads of a CheckRequest.
type checkInput struct {
	req  authz.Request // the HTTP request: method, host, path, body, the headers a check reads
	fwd  forwarded
	cert string // attributes.source.certificate
	// attributes.source.address.socket_address: whether it is one, its address and port.
	socket bool
	addr   string
	port   uint32
}

// inputOf reads a decoded CheckRequest.
func inputOf(req *authv3.CheckRequest) checkInput {
	var in checkInput
	in.req, in.fwd = requestFrom(req.GetAttributes().GetRequest().GetHttp())
	src := req.GetAttributes().GetSource()
	in.cert = src.GetCertificate()
	if sa := src.GetAddress().GetSocketAddress(); sa != nil {
		in.socket, in.addr, in.port = true, sa.GetAddress(), sa.GetPortValue()
	}
	return in
}

// wireRequest is what the Check handler decodes a request into. Under Codec, only what
// a check reads is decoded from the wire (decodeInput), into in; otherwise (another
// codec, or a request decodeInput leaves to proto.Unmarshal) the embedded CheckRequest
// is decoded as usual and read by inputOf.
type wireRequest struct {
	authv3.CheckRequest
	in      checkInput
	decoded bool // in was decoded from the wire
}

// input returns what the check reads of w.
func (w *wireRequest) input() *checkInput {
	if !w.decoded {
		w.in = inputOf(&w.CheckRequest)
		w.decoded = true
	}
	return &w.in
}

// errWire: decodeInput refuses the bytes, or leaves them to proto.Unmarshal. The
// caller then decodes them with proto.Unmarshal, whose error is the one returned.
var errWire = errors.New("envoy: CheckRequest left to proto.Unmarshal")

// maxDecodeDepth is how deep decodeInput follows nested messages (proto.Unmarshal: 10,000);
// a deeper request is left to proto.Unmarshal.
const maxDecodeDepth = 64

// maxReadHeaders is how many read headers (in headers and header_map together)
// decodeInput keeps; a request with more is left to proto.Unmarshal.
const maxReadHeaders = 8

// Descriptors of the messages decodeInput walks, for the fields it skips.
var (
	descCheck   = (&authv3.CheckRequest{}).ProtoReflect().Descriptor()
	descAttrs   = (&authv3.AttributeContext{}).ProtoReflect().Descriptor()
	descPeer    = (&authv3.AttributeContext_Peer{}).ProtoReflect().Descriptor()
	descAddress = (&corev3.Address{}).ProtoReflect().Descriptor()
	descSocket  = (&corev3.SocketAddress{}).ProtoReflect().Descriptor()
	descRequest = (&authv3.AttributeContext_Request{}).ProtoReflect().Descriptor()
	descHTTP    = (&authv3.AttributeContext_HttpRequest{}).ProtoReflect().Descriptor()
	descHMap    = (&corev3.HeaderMap{}).ProtoReflect().Descriptor()
	descHValue  = (&corev3.HeaderValue{}).ProtoReflect().Descriptor()
	descHeaders = descHTTP.Fields().ByNumber(3) // map<string, string> headers
)

// wireHeader is a read header found on the wire.
type wireHeader struct {
	name, value []byte
	inMap       bool // from the headers map (else header_map)
}

// wireFields is what decodeInput has read so far, as slices of the request's bytes;
// a field seen again replaces (a scalar) or merges into (a message) what it holds, as
// proto.Unmarshal does.
type wireFields struct {
	method, host, path, body, rawBody []byte
	cert, addr                        []byte
	port                              uint32
	socket                            bool
	buf                               [maxReadHeaders]wireHeader // the read headers, nh of them
	nh                                int
	hv                                wireHeaderValue // the header_map entry being read
}

// decodeInput reads what a check reads of a CheckRequest's bytes b into in, with
// exactly proto.Unmarshal's semantics: the last of a repeated scalar wins, messages
// merge, a oneof keeps its last member, the last of a repeated map key wins, unknown
// fields and known fields of another wire type are skipped, and every field is checked
// as proto.Unmarshal checks it (wire format, UTF-8 of every string, including the
// fields no check reads). On errWire the caller decodes b with proto.Unmarshal, which
// refuses the bytes or (for what decodeInput does not follow: very deep nesting, many
// read headers) reads them. f is work space. FuzzDecodeInput compares the two.
func decodeInput(b []byte, f *wireFields, in *checkInput) error {
	*f = wireFields{}
	err := walk(b, kindCheck, maxDecodeDepth-1, f)
	if err == nil {
		f.fill(in)
	}
	*f = wireFields{} // no reference to b is kept
	return err
}

// fill sets in from f, copying every string it keeps into one allocation (the bytes
// are gRPC's buffer, reused after decoding).
func (f *wireFields) fill(in *checkInput) {
	n := len(f.method) + len(f.host) + len(f.path) + len(f.cert) + len(f.addr)
	for _, h := range f.buf[:f.nh] {
		n += len(h.value)
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, p := range [][]byte{f.method, f.host, f.path, f.cert, f.addr} {
		sb.Write(p)
	}
	for _, h := range f.buf[:f.nh] {
		sb.Write(h.value)
	}
	all := sb.String()
	next := func(p []byte) string {
		s := all[:len(p)]
		all = all[len(p):]
		return s
	}
	*in = checkInput{}
	in.req.Method, in.req.Host, in.req.Path = next(f.method), next(f.host), next(f.path)
	in.cert, in.addr, in.port, in.socket = next(f.cert), next(f.addr), f.port, f.socket
	// The headers map first, then header_map, as requestFrom reads them.
	var values [maxReadHeaders]string
	for i, h := range f.buf[:f.nh] {
		values[i] = next(h.value)
	}
	for _, inMap := range []bool{true, false} {
		for i, h := range f.buf[:f.nh] {
			if h.inMap == inMap {
				collect(&in.req, &in.fwd, string(h.name), values[i])
			}
		}
	}
	switch {
	case len(f.rawBody) > 0:
		in.req.Body = append([]byte(nil), f.rawBody...)
	case len(f.body) > 0:
		in.req.Body = append([]byte(nil), f.body...)
	}
}

// wireKind is a message decodeInput reads fields of.
type wireKind int

const (
	kindCheck wireKind = iota
	kindAttrs
	kindPeer
	kindAddress
	kindSocket
	kindRequest
	kindHTTP
	kindHeaderMap
	kindHeaderValue
)

// descs are the kinds' descriptors, for the fields decodeInput skips.
var descs = [...]protoreflect.MessageDescriptor{kindCheck: descCheck, kindAttrs: descAttrs, kindPeer: descPeer,
	kindAddress: descAddress, kindSocket: descSocket, kindRequest: descRequest, kindHTTP: descHTTP,
	kindHeaderMap: descHMap, kindHeaderValue: descHValue}

// readField reads field num of wire type typ at the start of b, of a message of kind k,
// into f, and returns its length; handled false leaves the field to skipField (a field
// not read, or not of the wire type proto.Unmarshal reads it as). A switch rather than
// function values, so that f stays on the stack.
func readField(k wireKind, f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (n int, handled bool, err error) {
	switch k {
	case kindCheck:
		return checkField(f, num, typ, b, depth)
	case kindAttrs:
		return attrsField(f, num, typ, b, depth)
	case kindPeer:
		return peerField(f, num, typ, b, depth)
	case kindAddress:
		return addressField(f, num, typ, b, depth)
	case kindSocket:
		return socketField(f, num, typ, b)
	case kindRequest:
		return requestField(f, num, typ, b, depth)
	case kindHTTP:
		return httpField(f, num, typ, b, depth)
	case kindHeaderMap:
		return headerMapField(f, num, typ, b, depth)
	default:
		return headerValueField(f, num, typ, b)
	}
}

// walk reads the message b (of kind k, depth levels left), each field through
// readField or skipField.
func walk(b []byte, k wireKind, depth int, f *wireFields) error {
	if depth < 0 {
		return errWire
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		n, handled, err := readField(k, f, num, typ, b, depth)
		if err != nil {
			return err
		}
		if !handled {
			if n, err = skipField(descs[k], num, typ, b, depth); err != nil {
				return err
			}
		}
		b = b[n:]
	}
	return nil
}

// consumeTag reads a field's tag as proto.Unmarshal does: a number from 1 to
// protowire.MaxValidNumber, and no end-group tag outside a group.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 || v>>3 < uint64(protowire.MinValidNumber) || v>>3 > uint64(protowire.MaxValidNumber) {
		return 0, 0, -1
	}
	typ := protowire.Type(v & 7)
	if typ == protowire.EndGroupType {
		return 0, 0, -1
	}
	return protowire.Number(v >> 3), typ, n
}

// bytesField reads a length-delimited field's content.
func bytesField(b []byte) ([]byte, int, error) {
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, 0, errWire
	}
	return v, n, nil
}

// stringField reads a proto3 string field's content, which must be UTF-8.
func stringField(b []byte) ([]byte, int, error) {
	v, n, err := bytesField(b)
	if err == nil && !utf8.Valid(v) {
		return nil, 0, errWire
	}
	return v, n, err
}

// message reads a message field of kind k.
func message(b []byte, k wireKind, depth int, f *wireFields) (int, bool, error) {
	v, n, err := bytesField(b)
	if err == nil {
		err = walk(v, k, depth-1, f)
	}
	return n, true, err
}

func checkField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	if num == 1 && typ == protowire.BytesType { // attributes
		return message(b, kindAttrs, depth, f)
	}
	return 0, false, nil
}

func attrsField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	switch {
	case typ != protowire.BytesType:
	case num == 1: // source
		return message(b, kindPeer, depth, f)
	case num == 4: // request
		return message(b, kindRequest, depth, f)
	}
	return 0, false, nil
}

func peerField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	switch {
	case typ != protowire.BytesType:
	case num == 1: // address
		return message(b, kindAddress, depth, f)
	case num == 5: // certificate
		v, n, err := stringField(b)
		f.cert = v
		return n, true, err
	}
	return 0, false, nil
}

func addressField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	if typ != protowire.BytesType {
		return 0, false, nil
	}
	switch num {
	case 1: // socket_address, of the oneof address
		if !f.socket { // a new member: a new message
			f.socket, f.addr, f.port = true, nil, 0
		}
		return message(b, kindSocket, depth, f)
	case 2, 3: // pipe, envoy_internal_address: the other members
		n, err := skipField(descAddress, num, typ, b, depth)
		if err == nil {
			f.socket, f.addr, f.port = false, nil, 0
		}
		return n, true, err
	}
	return 0, false, nil
}

func socketField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte) (int, bool, error) {
	switch {
	case num == 2 && typ == protowire.BytesType: // address
		v, n, err := stringField(b)
		f.addr = v
		return n, true, err
	case num == 3 && typ == protowire.VarintType: // port_value, of the oneof port_specifier
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return 0, true, errWire
		}
		f.port = uint32(v)
		return n, true, nil
	case num == 4 && typ == protowire.BytesType: // named_port: the other member
		_, n, err := stringField(b)
		f.port = 0
		return n, true, err
	}
	return 0, false, nil
}

func requestField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	if num == 2 && typ == protowire.BytesType { // http
		return message(b, kindHTTP, depth, f)
	}
	return 0, false, nil
}

func httpField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	if typ != protowire.BytesType {
		return 0, false, nil // size (9) among them
	}
	var dst *[]byte
	switch num {
	case 2:
		dst = &f.method
	case 4:
		dst = &f.path
	case 5:
		dst = &f.host
	case 11:
		dst = &f.body
	case 12: // raw_body: bytes
		v, n, err := bytesField(b)
		f.rawBody = v
		return n, true, err
	case 3: // headers
		return headersEntry(f, b, depth)
	case 13: // header_map
		return message(b, kindHeaderMap, depth, f)
	case 1, 6, 7, 8, 10: // id, scheme, query, fragment, protocol: not read, but checked
		_, n, err := stringField(b)
		return n, true, err
	default:
		return 0, false, nil
	}
	v, n, err := stringField(b)
	*dst = v
	return n, true, err
}

// headersEntry reads an entry of the headers map (map<string, string>), as
// proto.Unmarshal does: absent key or value are "", the last of each wins, and the
// last entry of a key replaces the others.
func headersEntry(f *wireFields, b []byte, depth int) (int, bool, error) {
	if depth-1 < 0 {
		return 0, true, errWire
	}
	entry, n, err := bytesField(b)
	if err != nil {
		return 0, true, err
	}
	var key, value []byte
	for len(entry) > 0 {
		num, typ, m := protowire.ConsumeTag(entry)
		if m < 0 || num > protowire.MaxValidNumber {
			return 0, true, errWire
		}
		entry = entry[m:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			key, m, err = stringField(entry)
		case num == 2 && typ == protowire.BytesType:
			value, m, err = stringField(entry)
		default:
			if m = protowire.ConsumeFieldValue(num, typ, entry); m < 0 {
				err = errWire
			}
		}
		if err != nil {
			return 0, true, err
		}
		entry = entry[m:]
	}
	if !isRead(key) {
		return n, true, nil
	}
	for i := range f.buf[:f.nh] {
		if h := &f.buf[i]; h.inMap && string(h.name) == string(key) {
			h.value = value
			return n, true, nil
		}
	}
	return n, true, f.add(wireHeader{name: key, value: value, inMap: true})
}

func headerMapField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, bool, error) {
	if num != 1 || typ != protowire.BytesType { // headers
		return 0, false, nil
	}
	f.hv = wireHeaderValue{}
	n, _, err := message(b, kindHeaderValue, depth, f)
	if err != nil || !isRead(f.hv.key) {
		return n, true, err
	}
	v := f.hv.value
	if len(f.hv.raw) > 0 {
		v = f.hv.raw
	}
	return n, true, f.add(wireHeader{name: f.hv.key, value: v})
}

// wireHeaderValue is a HeaderValue of header_map.
type wireHeaderValue struct{ key, value, raw []byte }

func headerValueField(f *wireFields, num protowire.Number, typ protowire.Type, b []byte) (int, bool, error) {
	if typ != protowire.BytesType {
		return 0, false, nil
	}
	var n int
	var err error
	switch num {
	case 1:
		f.hv.key, n, err = stringField(b)
	case 2:
		f.hv.value, n, err = stringField(b)
	case 3:
		f.hv.raw, n, err = bytesField(b)
	default:
		return 0, false, nil
	}
	return n, true, err
}

// add keeps a read header; beyond maxReadHeaders the request is left to proto.Unmarshal.
func (f *wireFields) add(h wireHeader) error {
	if f.nh == maxReadHeaders {
		return errWire
	}
	f.buf[f.nh] = h
	f.nh++
	return nil
}

// maxReadName is at least the length of the longest header name a check reads
// (x-envoy-auth-partial-body: 25), and at most 32, so that isRead's string conversion
// uses a stack buffer.
const maxReadName = 32

// isRead reports whether a check reads the header name.
func isRead(name []byte) bool {
	if len(name) > maxReadName {
		return false
	}
	var r authz.Request
	var fwd forwarded
	dst, partial := target(&r, &fwd, string(name))
	return dst != nil || partial
}

// skipField checks the field num of wire type typ at the start of b, of a message of
// type md, as proto.Unmarshal would decode it, and returns its length. A field md does
// not have, or not of a wire type proto.Unmarshal reads it as, is an unknown field: its
// wire format only is checked.
func skipField(md protoreflect.MessageDescriptor, num protowire.Number, typ protowire.Type, b []byte, depth int) (int, error) {
	if fd := md.Fields().ByNumber(num); fd != nil {
		if n, known, err := checkKnown(fd, typ, b, depth); known || err != nil {
			return n, err
		}
	} else if md.ExtensionRanges().Len() > 0 {
		return 0, errWire
	}
	n := protowire.ConsumeFieldValue(num, typ, b)
	if n < 0 {
		return 0, errWire
	}
	return n, nil
}

// checkKnown checks a known field's value; known is false when proto.Unmarshal would
// take it for an unknown field (another wire type).
func checkKnown(fd protoreflect.FieldDescriptor, typ protowire.Type, b []byte, depth int) (n int, known bool, err error) {
	if fd.IsMap() {
		if typ != protowire.BytesType {
			return 0, false, nil
		}
		n, err = checkEntry(fd, b, depth)
		return n, true, err
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		if typ != protowire.BytesType {
			return 0, false, nil
		}
		if fd.Syntax() != protoreflect.Proto3 { // UTF-8 rules vary: not followed here
			return 0, true, errWire
		}
		_, n, err = stringField(b)
		return n, true, err
	case protoreflect.BytesKind:
		if typ != protowire.BytesType {
			return 0, false, nil
		}
		_, n, err = bytesField(b)
		return n, true, err
	case protoreflect.MessageKind:
		if typ != protowire.BytesType {
			return 0, false, nil
		}
		v, n, err := bytesField(b)
		if err == nil {
			err = checkMessage(v, fd.Message(), depth-1)
		}
		return n, true, err
	case protoreflect.GroupKind:
		return 0, true, errWire
	}
	var want protowire.Type
	switch fd.Kind() {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		want = protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		want = protowire.Fixed64Type
	default: // bool, enums and the varint integers
		want = protowire.VarintType
	}
	switch {
	case typ == want:
		n = protowire.ConsumeFieldValue(0, typ, b)
	case typ == protowire.BytesType && fd.IsList(): // packed
		v, m, err := bytesField(b)
		if err != nil {
			return 0, true, err
		}
		for len(v) > 0 {
			k := protowire.ConsumeFieldValue(0, want, v)
			if k < 0 {
				return 0, true, errWire
			}
			v = v[k:]
		}
		n = m
	default:
		return 0, false, nil
	}
	if n < 0 {
		return 0, true, errWire
	}
	return n, true, nil
}

// checkEntry checks a map entry, as proto.Unmarshal decodes one.
func checkEntry(fd protoreflect.FieldDescriptor, b []byte, depth int) (int, error) {
	if depth-1 < 0 {
		return 0, errWire
	}
	entry, n, err := bytesField(b)
	if err != nil {
		return 0, err
	}
	for len(entry) > 0 {
		num, typ, m := protowire.ConsumeTag(entry)
		if m < 0 || num > protowire.MaxValidNumber {
			return 0, errWire
		}
		entry = entry[m:]
		known := false
		switch num {
		case 1:
			m, known, err = checkKnown(fd.MapKey(), typ, entry, depth-1)
		case 2:
			m, known, err = checkKnown(fd.MapValue(), typ, entry, depth-1)
		}
		if err != nil {
			return 0, err
		}
		if !known {
			if m = protowire.ConsumeFieldValue(num, typ, entry); m < 0 {
				return 0, errWire
			}
		}
		entry = entry[m:]
	}
	return n, nil
}

// checkMessage checks a message no check reads, as proto.Unmarshal decodes it.
func checkMessage(b []byte, md protoreflect.MessageDescriptor, depth int) error {
	if depth < 0 || md.Syntax() != protoreflect.Proto3 {
		return errWire
	}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return errWire
		}
		b = b[n:]
		if n, err := skipField(md, num, typ, b, depth); err != nil {
			return err
		} else {
			b = b[n:]
		}
	}
	return nil
}

package envoy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
)

// Headers keygate sets on allowed requests, for the upstream.
const (
	HeaderKeyID     = "x-api-key-id"
	HeaderKeyName   = "x-api-key-name"
	HeaderKeyScopes = "x-api-key-scopes"
	HeaderRequestID = "x-request-id"
)

// Credential headers, removed from allowed requests unless Options.KeepCredentials.
const (
	headerAuthorization = "authorization"
	headerAPIKey        = "x-api-key"
)

// Options configures a Server.
type Options struct {
	// KeepCredentials forwards the Authorization and X-API-Key headers to the upstream.
	// The zero value removes them, so the upstream never sees a key.
	KeepCredentials bool
	// Logger receives one line per denial (info), per allow (debug) and per request
	// that could not be decided (warn). nil discards them.
	Logger *slog.Logger
	// Audit receives an auth.failed (or key.expired_on_use) event per denial; nil: none.
	Audit *audit.Log
	// Usage is told of every allowed key, to record its last use; nil: not recorded.
	Usage UsageRecorder
}

// UsageRecorder remembers when keys were used. It must not block: it runs on every
// allowed check.
type UsageRecorder interface {
	Seen(id string, at time.Time)
}

// Server answers Envoy's ext_authz Check calls with the decisions of an authz.Engine.
type Server struct {
	engine *authz.Engine
	remove []string
	log    *slog.Logger
	audit  *audit.Log
	usage  UsageRecorder
}

var _ authv3.AuthorizationServer = (*Server)(nil)

// NewServer returns a Server deciding with engine.
func NewServer(engine *authz.Engine, opts Options) *Server {
	s := &Server{engine: engine, log: opts.Logger, audit: opts.Audit, usage: opts.Usage}
	if !opts.KeepCredentials {
		s.remove = []string{headerAuthorization, headerAPIKey}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s
}

// Register registers the Authorization service on g.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check implements envoy.service.auth.v3.Authorization/Check. Denials are responses; the
// error is non-nil only when keygate could not decide, and Envoy then applies the
// filter's status_on_error.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	areq := requestFrom(req.GetAttributes().GetRequest().GetHttp())
	d, err := s.engine.Check(ctx, &areq)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "check undecided",
			slog.String("request_id", d.RequestID), slog.String("error", err.Error()))
		if errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled) {
			return nil, status.Error(codes.Canceled, "check canceled")
		}
		return nil, status.Error(codes.Unavailable, "keygate could not decide")
	}
	if !d.Allowed() {
		if s.log.Enabled(ctx, slog.LevelInfo) {
			attrs := []slog.Attr{slog.String("request_id", d.RequestID), slog.String("reason", d.Reason.String()),
				slog.Int("status", d.Denial.Status)}
			if d.Record.ID != "" { // revoked or expired: the key is known by its id
				attrs = append(attrs, slog.String("key_id", d.Record.ID))
			}
			s.log.LogAttrs(ctx, slog.LevelInfo, "denied", attrs...)
		}
		if s.audit != nil {
			ev := audit.Event{Event: audit.AuthFailed, Reason: d.Reason.String(), Status: d.Denial.Status,
				KeyID: d.Record.ID, Owner: d.Record.Owner, RequestID: d.RequestID, Source: source(req)}
			if d.Reason == authz.ReasonExpired {
				ev.Event = audit.KeyExpiredOnUse
			}
			s.audit.Write(ev)
		}
		return denied(&d), nil
	}
	if s.usage != nil {
		s.usage.Seen(d.Record.ID, time.Now())
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "allowed",
			slog.String("request_id", d.RequestID), slog.String("key_id", d.Record.ID))
	}
	return s.allowed(&d), nil
}

// source is the client's address as Envoy saw it ("ip:port"), for the audit log.
func source(req *authv3.CheckRequest) string {
	sa := req.GetAttributes().GetSource().GetAddress().GetSocketAddress()
	if sa == nil {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// requestFrom reads the credential headers from both places Envoy may put them: the
// headers map, or header_map when the filter sets encode_raw_headers. Names are matched
// case-insensitively; repeated headers are joined with "," as HTTP merges them.
func requestFrom(h *authv3.AttributeContext_HttpRequest) authz.Request {
	var r authz.Request
	for k, v := range h.GetHeaders() {
		collect(&r, k, v)
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		collect(&r, hv.GetKey(), v)
	}
	return r
}

func collect(r *authz.Request, name, value string) {
	var dst *string
	switch {
	case len(name) == len(headerAuthorization) && strings.EqualFold(name, headerAuthorization):
		dst = &r.Authorization
	case len(name) == len(headerAPIKey) && strings.EqualFold(name, headerAPIKey):
		dst = &r.APIKey
	case len(name) == len(HeaderRequestID) && strings.EqualFold(name, HeaderRequestID):
		dst = &r.RequestID
	default:
		return
	}
	if *dst == "" {
		*dst = value
	} else {
		*dst += "," + value
	}
}

func (s *Server) allowed(d *authz.Decision) *authv3.CheckResponse {
	rec := &d.Record
	scopes := strings.Join(rec.Scopes, ",")
	scopeValues := make([]*structpb.Value, len(rec.Scopes))
	for i, sc := range rec.Scopes {
		scopeValues[i] = structpb.NewStringValue(sc)
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				overwrite(HeaderKeyID, rec.ID),
				overwrite(HeaderKeyName, rec.Name),
				overwrite(HeaderKeyScopes, scopes),
				overwrite(HeaderRequestID, d.RequestID),
			},
			HeadersToRemove: s.remove,
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"key_id":   structpb.NewStringValue(rec.ID),
			"key_name": structpb.NewStringValue(rec.Name),
			"owner":    structpb.NewStringValue(rec.Owner),
			"scopes":   structpb.NewListValue(&structpb.ListValue{Values: scopeValues}),
		}},
	}
}

func denied(d *authz.Decision) *authv3.CheckResponse {
	headers := make([]*corev3.HeaderValueOption, 0, 3)
	headers = append(headers, overwrite("content-type", "application/json"))
	if d.Denial.WWWAuthenticate != "" {
		headers = append(headers, overwrite("www-authenticate", d.Denial.WWWAuthenticate))
	}
	if d.Denial.RetryAfter != "" {
		headers = append(headers, overwrite("retry-after", d.Denial.RetryAfter))
	}
	headers = append(headers, overwrite(HeaderRequestID, d.RequestID))
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(grpcCode(d.Denial.Status))},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Denial.Status)},
			Headers: headers,
			Body:    d.Denial.Body,
		}},
	}
}

// grpcCode is the CheckResponse status for a denial's HTTP status.
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	case http.StatusBadRequest:
		return codes.InvalidArgument
	default:
		return codes.PermissionDenied
	}
}

func overwrite(key, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: key, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

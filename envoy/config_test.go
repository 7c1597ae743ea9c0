package envoy

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// loadBootstrap decodes an Envoy bootstrap YAML strictly: unknown fields and unknown
// typed_config types are errors, as they are for Envoy itself.
func loadBootstrap(path string) (*bootstrapv3.Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &b, nil
}

// validateDeep runs the generated ValidateAll on m and on the contents of every Any
// inside it, which the generated validators do not unpack themselves.
func validateDeep(m proto.Message) (anys int, err error) {
	if v, ok := m.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return 0, err
		}
	}
	var walk func(protoreflect.Message) error
	walk = func(msg protoreflect.Message) error {
		if a, ok := msg.Interface().(*anypb.Any); ok {
			inner, err := a.UnmarshalNew()
			if err != nil {
				return fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
			}
			anys++
			if v, ok := inner.(interface{ ValidateAll() error }); ok {
				if err := v.ValidateAll(); err != nil {
					return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
				}
			}
			return walk(inner.ProtoReflect())
		}
		var err error
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len() && err == nil; i++ {
					err = walk(l.Get(i).Message())
				}
			case fd.IsMap() && fd.MapValue().Message() != nil:
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					err = walk(mv.Message())
					return err == nil
				})
			case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
				err = walk(v.Message())
			}
			return err == nil
		})
		return err
	}
	return anys, walk(m.ProtoReflect())
}

func TestShippedConfigsAreValid(t *testing.T) {
	paths, err := filepath.Glob("configs/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no configs found: %v", err)
	}
	for _, path := range paths {
		t.Run(filepath.Base(path), func(t *testing.T) {
			b, err := loadBootstrap(path)
			if err != nil {
				t.Fatal(err)
			}
			anys, err := validateDeep(b)
			if err != nil {
				t.Fatal(err)
			}
			if anys == 0 {
				t.Fatal("no typed_config found; the walk checked nothing")
			}
			checkExtAuthz(t, b)
		})
	}
}

// checkExtAuthz asserts what keygate relies on: a V3 gRPC ext_authz filter before the
// router, pointing at a defined HTTP/2 cluster, with a timeout, peer certificates, and
// fail-closed errors.
func checkExtAuthz(t *testing.T, b *bootstrapv3.Bootstrap) {
	t.Helper()
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	found := 0
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&hcm); err != nil {
					continue
				}
				filters := hcm.GetHttpFilters()
				for i, hf := range filters {
					var ea extauthzv3.ExtAuthz
					if err := hf.GetTypedConfig().UnmarshalTo(&ea); err != nil {
						continue
					}
					found++
					if i == len(filters)-1 {
						t.Error("ext_authz is the last HTTP filter; the router must follow it")
					}
					if ea.GetTransportApiVersion().String() != "V3" {
						t.Errorf("transport_api_version = %v", ea.GetTransportApiVersion())
					}
					if !ea.GetIncludePeerCertificate() {
						t.Error("include_peer_certificate is off")
					}
					if ea.GetFailureModeAllow() {
						t.Error("failure_mode_allow lets requests through when keygate cannot decide")
					}
					if wb := ea.GetWithRequestBody(); wb == nil || !wb.GetPackAsBytes() || wb.GetMaxRequestBytes() == 0 {
						t.Errorf("with_request_body %v: model routes need the body as raw_body", wb)
					}
					if !hcm.GetNormalizePath().GetValue() || !hcm.GetMergeSlashes() {
						t.Error("paths are not normalized before keygate matches routes")
					}
					if a := hcm.GetPathWithEscapedSlashesAction(); a != hcmv3.HttpConnectionManager_REJECT_REQUEST {
						t.Errorf("path_with_escaped_slashes_action = %v; %%2F and %%5C must be refused", a)
					}
					if a := hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a != corev3.HttpProtocolOptions_REJECT_REQUEST {
						t.Errorf("headers_with_underscores_action = %v; X_Api_Key_Id must be refused", a)
					}
					if ea.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
						t.Errorf("status_on_error = %v", ea.GetStatusOnError().GetCode())
					}
					gs := ea.GetGrpcService()
					if d := gs.GetTimeout().AsDuration(); d <= 0 || d > time.Second {
						t.Errorf("grpc_service timeout = %v; set it explicitly, at most 1s", d)
					}
					c := clusters[gs.GetEnvoyGrpc().GetClusterName()]
					if c == nil {
						t.Fatalf("ext_authz cluster %q is not defined", gs.GetEnvoyGrpc().GetClusterName())
					}
					if _, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; !ok {
						t.Errorf("cluster %q has no HTTP/2 protocol options; gRPC needs HTTP/2", c.GetName())
					}
					// Over TLS, Envoy must present a certificate (keygate may require one)
					// and offer h2.
					if ts := c.GetTransportSocket(); ts != nil {
						var up tlsv3.UpstreamTlsContext
						if err := ts.GetTypedConfig().UnmarshalTo(&up); err != nil {
							t.Fatalf("keygate cluster transport socket: %v", err)
						}
						cc := up.GetCommonTlsContext()
						if len(cc.GetTlsCertificates()) == 0 || cc.GetValidationContext().GetTrustedCa() == nil {
							t.Error("the keygate cluster's TLS has no client certificate or no trusted CA")
						}
						if len(cc.GetAlpnProtocols()) == 0 || cc.GetAlpnProtocols()[0] != "h2" {
							t.Errorf("ALPN %v, want h2 for gRPC", cc.GetAlpnProtocols())
						}
					}
				}
			}
		}
	}
	if found == 0 {
		t.Fatal("no ext_authz filter found")
	}
}

func TestLoadBootstrapIsStrict(t *testing.T) {
	dir := t.TempDir()
	for name, doc := range map[string]string{
		"unknown field": "static_resources:\n  listenerz: []\n",
		"unknown typed_config": `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: x
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.nope.v3.Nope}
`,
		"unknown field inside typed_config": `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefx: typo
`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, "bad.yaml")
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := loadBootstrap(path); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	t.Run("invalid value inside typed_config", func(t *testing.T) {
		// Decodes fine, but the HCM has no stat_prefix (required): only the deep
		// validation catches it.
		path := filepath.Join(dir, "invalid.yaml")
		doc := `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          route_config: {name: r}
`
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := loadBootstrap(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ValidateAll(); err != nil {
			t.Fatalf("the shallow validator already fails (%v); the case does not test the deep walk", err)
		}
		if _, err := validateDeep(b); err == nil {
			t.Fatal("deep validation accepted an HCM without stat_prefix")
		}
	})
}

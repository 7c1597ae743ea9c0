// Package envoy adapts keygate's decision engine to Envoy's external authorization API
// (envoy.service.auth.v3, over gRPC) and holds the Envoy configurations we ship.
//
// Server.Check reads the credential headers from the CheckRequest, asks the authz.Engine,
// and answers with an OkHttpResponse (identity headers for the upstream, credential
// headers removed, key metadata as dynamic_metadata) or a DeniedHttpResponse carrying
// the deny profile's status, headers and JSON body. A gRPC error means only that keygate
// could not decide; Envoy then answers with the filter's status_on_error.
//
// configs/ holds example Envoy bootstraps; config_test.go decodes each strictly into
// go-control-plane's types and validates every typed_config inside.
package envoy

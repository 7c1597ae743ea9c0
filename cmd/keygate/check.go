package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// headerFlags collects repeated -H "Name: value" flags.
type headerFlags [][2]string

func (h *headerFlags) String() string { return fmt.Sprint(*h) }

func (h *headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want \"Name: value\", got %q", v)
	}
	*h = append(*h, [2]string{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)})
	return nil
}

// runCheck sends one CheckRequest, shaped as Envoy's ext_authz filter sends it, and
// prints the decision. Exit status 0 means allowed, 3 denied.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keygate check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9001", "keygate's gRPC address")
	method := fs.String("method", "GET", "HTTP method of the request to check")
	path := fs.String("path", "/v1/models", "HTTP path of the request to check")
	host := fs.String("host", "api.example.com", "HTTP host of the request to check")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	cacert := fs.String("cacert", "", "reach a TLS gRPC listener: the CA bundle its certificate chains to")
	certFile := fs.String("cert", "", "client certificate for an mTLS listener (with --key)")
	keyFile := fs.String("key", "", "the client certificate's private key")
	serverName := fs.String("server-name", "", "TLS server name to verify (default: the host of --addr)")
	body := fs.String("body", "", "request body the check sees (as Envoy's with_request_body sends it)")
	bodyFile := fs.String("body-file", "", "read the request body from this file (- for stdin is not supported)")
	var headers headerFlags
	fs.Var(&headers, "H", "request header \"Name: value\" (repeatable), e.g. -H \"Authorization: Bearer mgx-sk-…\"")
	if err := fs.Parse(args); err != nil {
		return exitCode(2)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check: unexpected argument %q", fs.Arg(0))
	}

	if *body != "" && *bodyFile != "" {
		return errors.New("check: --body and --body-file are exclusive")
	}
	if *bodyFile != "" {
		b, err := os.ReadFile(*bodyFile)
		if err != nil {
			return fmt.Errorf("check: --body-file: %w", err)
		}
		*body = string(b)
	}
	creds := insecure.NewCredentials()
	if *cacert != "" || *certFile != "" || *keyFile != "" || *serverName != "" {
		tc, err := checkTLS(*cacert, *certFile, *keyFile, *serverName)
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	h := map[string]string{":authority": *host, ":method": *method, ":path": *path, ":scheme": "http"}
	for _, kv := range headers {
		if prev, ok := h[kv[0]]; ok && !strings.HasPrefix(kv[0], ":") {
			h[kv[0]] = prev + "," + kv[1] // repeated headers merge, as Envoy merges them
		} else {
			h[kv[0]] = kv[1]
		}
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: *method, Path: *path, Host: *host, Scheme: "http", Protocol: "HTTP/1.1", Headers: h,
			Body: *body, Size: int64(len(*body)),
		}},
	}}

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	code := codes.Code(resp.GetStatus().GetCode())
	if ok := resp.GetOkResponse(); ok != nil {
		fmt.Fprintf(stdout, "ALLOW (%s)\n", code)
		for _, o := range ok.GetHeaders() {
			fmt.Fprintf(stdout, "upstream header  %s: %s\n", o.GetHeader().GetKey(), o.GetHeader().GetValue())
		}
		if r := ok.GetHeadersToRemove(); len(r) > 0 {
			fmt.Fprintf(stdout, "removed headers  %s\n", strings.Join(r, ", "))
		}
		return nil
	}
	dr := resp.GetDeniedResponse()
	fmt.Fprintf(stdout, "DENY %d (%s)\n", dr.GetStatus().GetCode(), code)
	for _, o := range dr.GetHeaders() {
		fmt.Fprintf(stdout, "%s: %s\n", o.GetHeader().GetKey(), o.GetHeader().GetValue())
	}
	fmt.Fprintf(stdout, "\n%s\n", dr.GetBody())
	return exitCode(3)
}

// checkTLS is the client side of a TLS (or mTLS) gRPC listener.
func checkTLS(cacert, certFile, keyFile, serverName string) (*tls.Config, error) {
	tc := &tls.Config{ServerName: serverName, MinVersion: tls.VersionTLS12}
	if cacert != "" {
		pem, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert: %s holds no PEM certificate", cacert)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("--cert and --key go together")
	}
	if certFile != "" {
		kp, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

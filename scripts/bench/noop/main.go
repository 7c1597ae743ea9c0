// Command noop is the baseline of scripts/bench: an ext_authz server that allows every
// request, built with the grpc-go version keygate uses and plain grpc.NewServer()
// options. It is the yardstick, not something to tune.
//
//	go run ./scripts/bench/noop -addr 127.0.0.1:9101
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
)

type allowAll struct{}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{
		OkResponse: &authv3.OkHttpResponse{}}}, nil
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback)")
	flag.Parse()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, allowAll{})
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
		<-sig
		g.Stop()
	}()
	fmt.Println("listening", l.Addr())
	_ = g.Serve(l)
}

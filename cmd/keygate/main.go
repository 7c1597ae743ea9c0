// Command keygate is an Envoy ext_authz sidecar that checks API keys kept (hashed) in
// HashiCorp Vault, and the tool that manages those keys.
//
//	keygate serve [flags]            run the ext_authz gRPC server
//	keygate keys create|list|show|revoke
//	keygate check [flags]            send one Check to a running server, as Envoy would
//	keygate certs init-ca|issue|inspect|revoke
//	keygate config validate --config FILE
//	keygate version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=…" (make build, make
// dev, make image). A binary built by "go install …@vX.Y.Z" reports its module version.
var version = "dev"

func init() {
	if version != "dev" {
		return
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		version = bi.Main.Version
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var exit exitCode
	switch {
	case errors.As(err, &exit):
		os.Exit(int(exit))
	case err != nil:
		fmt.Fprintln(os.Stderr, "keygate:", err)
		os.Exit(1)
	}
}

// exitCode ends the program with a status and no further message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

const usage = `usage: keygate <command> [flags]

commands:
  serve     run the ext_authz gRPC server (and the health endpoint)
  keys      create, list, show and revoke API keys
  check     send one authorization check to a running keygate, as Envoy would
  certs     a private PKI: init-ca, issue, inspect, revoke (CRL)
  config    validate --config FILE: check a configuration offline
  version   print the version (also: keygate --version)

Run "keygate <command> -h" for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "keys":
		return runKeys(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "certs":
		return runCerts(ctx, args[1:], stdout, stderr)
	case "config":
		return runConfig(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "keygate", version)
		return nil
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "keygate: unknown command %q\n\n%s", args[0], usage)
		return exitCode(2)
	}
}

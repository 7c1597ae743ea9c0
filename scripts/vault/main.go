// Command vault is HashiCorp Vault v1.21.0 built with the "minimal" tag, pinned for
// keygate's development setup and tests (dev server with KV v2, AppRole, PKI and cert auth).
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}

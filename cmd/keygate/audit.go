package main

import (
	"fmt"
	"io"
	"os"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
)

// openAudit opens the audit log the config names: "" for none, "stdout" for the given
// writer, or a file, appended to and created with mode 0600. The closer may be nil. Any
// string shaped like a key of format is written as its hint.
func openAudit(path string, stdout io.Writer, format authz.Format) (*audit.Log, io.Closer, error) {
	switch path {
	case "":
		return nil, nil, nil
	case "stdout", "-":
		return audit.New(stdout, audit.WithFormat(format)), nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	return audit.New(f, audit.WithFormat(format)), f, nil
}

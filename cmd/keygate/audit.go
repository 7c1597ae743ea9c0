package main

import (
	"fmt"
	"io"
	"os"

	"github.com/keygate/keygate/authz"
	"github.com/keygate/keygate/authz/audit"
)

// maxAuditRecent bounds audit_recent: each kept event takes about 200 bytes, and more
// with its details.
const maxAuditRecent = 1_000_000

// openAudit opens the audit log the config names: "" for none, "stdout" for the given
// writer, or a file, appended to and created with mode 0600. The closer may be nil. Any
// string shaped like a key of format is written as its hint. With recent above 0 the
// log also keeps that many recent events in memory (GET /audit), seeded from the end of
// the file when there is one.
func openAudit(path string, stdout io.Writer, format authz.Format, recent int) (*audit.Log, io.Closer, error) {
	opts := []audit.Option{audit.WithFormat(format), audit.WithRecent(recent)}
	switch path {
	case "":
		return nil, nil, nil
	case "stdout", "-":
		return audit.New(stdout, opts...), nil, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	if err := endLine(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("audit log: %w", err)
	}
	l := audit.New(f, opts...)
	if _, err := l.Seed(f); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("audit log: reading its recent events: %w", err)
	}
	return l, f, nil
}

// endLine ends a torn last line (a crash mid-write) with a newline, so that the next
// event starts a line of its own instead of being lost with it.
func endLine(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 || !st.Mode().IsRegular() {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil {
		return err
	}
	if last[0] != '\n' {
		_, err = f.Write([]byte{'\n'})
	}
	return err
}

package main

import (
	"bytes"
	"context"
	"testing"
)

func TestVersion(t *testing.T) {
	old := version
	version = "v1.2.3-test"
	defer func() { version = old }()
	for _, arg := range []string{"version", "--version", "-version"} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{arg}, &out, &errb); err != nil || out.String() != "keygate v1.2.3-test\n" {
			t.Errorf("keygate %s: %q, %v", arg, out.String(), err)
		}
	}
}

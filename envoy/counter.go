package envoy

import (
	"time"

	"github.com/keygate/keygate/authz"
)

// Counter is told of every check once it is decided, for usage analytics; the
// *usage.Aggregator is one. It runs on the check path, so it must not block: it may
// read the decision but not keep the pointer.
type Counter interface {
	Count(d *authz.Decision, at time.Time)
}

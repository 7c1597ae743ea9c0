package usage

import "errors"

// Errors of the package.
var (
	// ErrInvalidQuery is a query the store refuses: a bad step, dimension or range.
	ErrInvalidQuery = errors.New("invalid usage query")
	// ErrTooManyPoints is a query whose answer would be larger than MaxPoints.
	ErrTooManyPoints = errors.New("the query would return too many points; narrow the range or use a coarser step")
	// ErrStore is a database failure.
	ErrStore = errors.New("usage store failure")
)

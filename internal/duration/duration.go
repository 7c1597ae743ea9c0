// Package duration parses the durations keygate's flags, config and admin API accept:
// Go durations ("150ms", "1h30m") and whole days ("30d", "90d").
package duration

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse accepts Go durations and whole days.
func Parse(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 36500 {
			return 0, fmt.Errorf("invalid duration %q: want whole days such as 30d", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}

// Package duration parses the durations keygate's flags, config and admin API accept:
// Go durations ("150ms", "1h30m") and whole days ("30d", "90d").
package duration

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Hint is what every invalid duration's message suggests.
const Hint = "use 90d or 1h30m (units: d, h, m, s, ms)"

// Parse accepts Go durations and whole days. Every error reads
// `invalid duration "…": use 90d or 1h30m (units: d, h, m, s, ms)`, whether the value
// came from a flag, the config file or the admin API.
func Parse(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 36500 {
			if err == nil {
				return 0, fmt.Errorf("invalid duration %q: want whole days from 0d to 36500d", s)
			}
			return 0, fmt.Errorf("invalid duration %q: %s; days are whole (30d)", s, Hint)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %s", s, Hint)
	}
	return d, nil
}

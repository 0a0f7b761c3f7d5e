package latchkey

import (
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a duration such as "30d", "2w", "1h30m" or "90s":
// Go's time.ParseDuration units plus "d" (24h) and "w" (7d), which may be
// combined ("1d12h"). Negative durations are refused.
func ParseDuration(s string) (time.Duration, error) {
	in := s
	if s == "" {
		return 0, Errorf(EInvalid, "empty duration")
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && (s[i] >= '0' && s[i] <= '9') {
			i++
		}
		if i == 0 || i == len(s) {
			break // let time.ParseDuration judge the rest
		}
		var unit time.Duration
		switch s[i] {
		case 'd':
			unit = 24 * time.Hour
		case 'w':
			unit = 7 * 24 * time.Hour
		default:
			goto rest
		}
		n, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil || n > int64((1<<63-1)/unit) {
			return 0, Errorf(EInvalid, "duration %q is out of range", in)
		}
		total += time.Duration(n) * unit
		s = s[i+1:]
	}
rest:
	if s != "" {
		if strings.HasPrefix(s, "-") {
			return 0, Errorf(EInvalid, "duration %q must not be negative", in)
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, Errorf(EInvalid, "invalid duration %q (use e.g. 30d, 12h, 1h30m)", in)
		}
		total += d
	}
	if total < 0 {
		return 0, Errorf(EInvalid, "duration %q is out of range", in)
	}
	return total, nil
}

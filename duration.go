package latchkey

import (
	"fmt"
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

// ParseDurationSetting is ParseDuration for a route file's setting that
// may be left out: def when s is empty, and an error that is the plain
// message, for the file's own error to wrap.
func ParseDurationSetting(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s", ErrorMessage(err))
	}
	return d, nil
}

// ParseSize reads a size: a number of bytes, or with a unit (KiB, MiB,
// GiB; KB, MB, GB are taken as the same binary units), as the route
// files write them.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mult {
		return 0, fmt.Errorf("want a positive size such as 1048576, 512KiB or 10MiB")
	}
	return n * mult, nil
}

package latchkey

import (
	"encoding/base64"
	"strconv"
)

// Page limits for listings.
const (
	DefaultPageLimit = 100
	MaxPageLimit     = 1000
)

// PageLimit returns n clamped to (0, MaxPageLimit], DefaultPageLimit for 0.
func PageLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultPageLimit
	case n > MaxPageLimit:
		return MaxPageLimit
	}
	return n
}

// EncodeCursor renders a store sequence number as an opaque cursor.
func EncodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString(strconv.AppendInt([]byte("c1:"), seq, 10))
}

// DecodeCursor reverses EncodeCursor; anything else is EInvalid.
func DecodeCursor(c string) (int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 4 || string(b[:3]) != "c1:" {
		return 0, Errorf(EInvalid, "invalid cursor")
	}
	n, err := strconv.ParseInt(string(b[3:]), 10, 64)
	if err != nil || n <= 0 {
		return 0, Errorf(EInvalid, "invalid cursor")
	}
	return n, nil
}

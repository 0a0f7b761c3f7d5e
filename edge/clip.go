package edge

import "unicode/utf8"

// Clip cuts s to at most n bytes, on a character boundary: what a door
// keeps of a client's text (a statement, a tool name) in a record or an
// answer.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

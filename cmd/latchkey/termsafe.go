package main

import (
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

// termSafe writes to w with every character that could drive a terminal
// or disguise text shown as \uXXXX: control characters other than
// newline and tab (ESC, NUL, CR, the C1 range), DEL, the bidirectional
// overrides, and invalid UTF-8 (as \ufffd). Everything the CLI prints
// goes through it, so a token's name or an audit record's user agent
// cannot move the cursor, retitle the window or reorder what the
// operator reads. The escapes are valid inside JSON strings too, so
// --json output stays JSON.
type termSafe struct {
	w       io.Writer
	pending []byte // an incomplete UTF-8 sequence at the end of the last Write
}

func (t *termSafe) Write(p []byte) (int, error) {
	n := len(p)
	b := append(t.pending, p...)
	t.pending = nil
	var out []byte
	clean := 0 // b[clean:i] needs no escaping yet
	for i := 0; i < len(b); {
		c := b[i]
		if c >= 0x20 && c < 0x7f || c == '\n' || c == '\t' {
			i++
			continue
		}
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size <= 1 && !utf8.FullRune(b[i:]) {
			t.pending = append([]byte(nil), b[i:]...) // the rest comes with the next Write
			b = b[:i]
			break
		}
		if r != utf8.RuneError && !unsafeRune(r) {
			i += size
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+16)
		}
		out = append(out, b[clean:i]...)
		if r == utf8.RuneError {
			r = 0xfffd
		}
		out = fmt.Appendf(out, `\u%04x`, r)
		i += size
		clean = i
	}
	if out == nil {
		out = b
	} else {
		out = append(out, b[clean:]...)
	}
	if _, err := t.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

func unsafeRune(r rune) bool {
	return (unicode.IsControl(r) && r != '\n' && r != '\t') || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

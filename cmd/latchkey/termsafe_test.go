package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// Issue 12 item 13: nothing the CLI prints can drive the operator's
// terminal, whatever the server holds.
func TestTermSafe(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text\twith tab\n":    "plain text\twith tab\n",
		"naïve café ✓":              "naïve café ✓",
		"\x1b[2J\x1b]0;pwned\x07":   `\u001b[2J\u001b]0;pwned\u0007`,
		"a\x00b\rc\x7f":             `a\u0000b\u000dc\u007f`,
		"c1:\u009b31m":              `c1:\u009b31m`,
		"invoice\u202etxt.exe":      `invoice\u202etxt.exe`,
		"bad \xff utf-8":            `bad \ufffd utf-8`,
		"isolate \u2066x\u2069 end": `isolate \u2066x\u2069 end`,
	} {
		var b bytes.Buffer
		w := &termSafe{w: &b}
		// One byte at a time: sequences split across writes still come out whole.
		for i := 0; i < len(in); i++ {
			w.Write([]byte{in[i]})
		}
		if b.String() != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, b.String(), want)
		}
	}
	// JSON through it stays JSON, with the same value.
	var b bytes.Buffer
	v := map[string]string{"name": "a\u202eb\u009bc"}
	raw, _ := json.Marshal(v)
	(&termSafe{w: &b}).Write(raw)
	var back map[string]string
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || back["name"] != v["name"] || strings.ContainsRune(b.String(), '\u202e') {
		t.Errorf("JSON through termSafe: %s %v", b.String(), err)
	}
}

package pggate

import (
	"encoding/json"
	"reflect"
	"testing"
)

// The hand-made statement detail is valid JSON and decodes to what
// encoding/json would have written, whatever the text holds.
func FuzzStatementDetail(f *testing.F) {
	for _, s := range []string{"SELECT 1", "", `"quoted" \back\slash`, "tab\tnew\nline\x00nul", "<html>&", "bad \xff utf-8", "\u2028"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, text, param string) {
		for _, params := range [][]string{nil, {param}, {param, "NULL"}} {
			b := statementDetail("0123456789abcdef", 42, "analytics", "extended", text, params)
			type detail struct {
				Session   string   `json:"session"`
				N         int64    `json:"n"`
				Database  string   `json:"database"`
				Protocol  string   `json:"protocol"`
				Statement string   `json:"statement"`
				Params    []string `json:"params,omitempty"`
			}
			var got, want detail
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("%q: %v", b, err)
			}
			ref, _ := json.Marshal(detail{"0123456789abcdef", 42, "analytics", "extended", text, params})
			json.Unmarshal(ref, &want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("detail %s decodes to %+v, encoding/json's to %+v", b, got, want)
			}
		}
	})
}

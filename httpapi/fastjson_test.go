package httpapi

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

var verifyBodies = []string{
	`{"token":"lk_abc","scopes":["a:b","c:d"],"ip":"198.51.100.7","method":"GET","path":"/x"}`,
	` { "token" : "t" , "scopes" : [ ] } `,
	"{\n\t\"token\":\"t\",\"scopes\":[\"x\"]\r\n}",
	`{}`,
	`{"token":"t","token":"u"}`,
	`{"scopes":["a"],"scopes":["b","c"]}`,
	`{"Token":"t"}`,
	`null`,
	"{\"token\":\"\xff\"}",
	`{"token":"t\u0041"}`,
	`{"token":"é"}`,
	`{"token":null}`,
	`{"scopes":null}`,
	`{"token":"t","extra":1}`,
	`{"token":"t"} {}`,
	`{"token":"t",}`,
	`{"token":1}`,
	`{"scopes":"a"}`,
	`[]`,
	``,
	`{"token":"t"`,
	`{"token":"<&>"}`,
}

// The fast reader accepts only what encoding/json accepts, with the same
// result.
func FuzzVerifyJSON(f *testing.F) {
	for _, b := range verifyBodies {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast, slow client.VerifyRequest
		if !parseVerifyFast(b, &fast) {
			return
		}
		if err := decodeFrom(bytes.NewReader(b), &slow); err != nil {
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", b, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast %+v, encoding/json %+v", b, fast, slow)
		}
	})
}

func TestVerifyJSONFastPathTaken(t *testing.T) {
	for i, b := range verifyBodies[:4] {
		var r client.VerifyRequest
		if !parseVerifyFast([]byte(b), &r) {
			t.Errorf("body %d %q: the common shape fell back to encoding/json", i, b)
		}
	}
}

// Issue 12 item 13: duplicate fields, case variants, null, invalid UTF-8
// and trailing data are refused, on the fast path and off it.
func TestDecodeIsStrict(t *testing.T) {
	for _, b := range []string{
		`{"token":"t","token":"u"}`, `{"scopes":["a"],"scopes":["b"]}`, `{"Token":"t"}`, `{"TOKEN":"t","scopes":[]}`,
		`null`, ` null `, `[]`, `"x"`, "{\"token\":\"\xff\"}", `{"token":"t"} {}`, `{"token":"t"}x`,
	} {
		var r client.VerifyRequest
		if parseVerifyFast([]byte(b), &r) {
			t.Errorf("fast path accepted %q", b)
		}
		r = client.VerifyRequest{}
		if err := decodeFrom(bytes.NewReader([]byte(b)), &r); latchkey.ErrorCode(err) != latchkey.EInvalid {
			t.Errorf("decodeFrom(%q) = %v, want invalid_argument", b, err)
		}
	}
	var r struct {
		Name   string `json:"name"`
		Nested struct {
			Limit int `json:"limit"`
		} `json:"rate_limit"`
	}
	for b, want := range map[string]string{
		`{"name":"a","name":"b"}`:              `"name" appears twice`,
		`{"NAME":"a"}`:                         `unknown field "NAME"`,
		`{"rate_limit":{"Limit":1}}`:           `unknown field "rate_limit.Limit"`,
		`{"rate_limit":{"limit":"x"}}`:         `"rate_limit.limit" must be of type int`,
		`{"rate_limit":{"limit":1,"limit":2}}`: `appears twice`,
	} {
		err := decodeFrom(bytes.NewReader([]byte(b)), &r)
		if latchkey.ErrorCode(err) != latchkey.EInvalid || !bytes.Contains([]byte(latchkey.ErrorMessage(err)), []byte(want)) {
			t.Errorf("decodeFrom(%s) = %v, want %q", b, err, want)
		}
	}
}

// The fast writer writes exactly what writeJSON writes, or steps aside.
func TestVerifyResponseMatchesEncodingJSON(t *testing.T) {
	exp := time.Date(2027, 1, 2, 3, 4, 5, 600, time.UTC)
	rem := int64(7)
	cases := []client.VerifyResponse{
		{Valid: true, Code: latchkey.Valid, TokenID: "AbCdEfGhIjKlMnOp", Subject: "svc", Scopes: []string{"a:b", "c:*"}, Meta: json.RawMessage(`{}`)},
		{Valid: true, Code: latchkey.Valid, TokenID: "x", ExpiresAt: &exp, Meta: json.RawMessage(`{"team":"<billing & co>","n":[1,2]}`), Remaining: &rem,
			RateLimit: &client.RateLimitStatus{Limit: 10, Remaining: 3, Reset: exp}, Warnings: []string{"rotation_due"}},
		{Valid: false, Code: latchkey.RateLimited, TokenID: "x", RateLimit: &client.RateLimitStatus{Limit: 10, Reset: exp.In(time.FixedZone("x", 3600)), RetryAfter: 6}},
		{Valid: false, Code: latchkey.NotFound},
		{Valid: true, Code: latchkey.Valid, Subject: "naïve", Scopes: []string{"a"}},
		{Valid: true, Code: latchkey.Valid, Subject: "quote\"d", Meta: json.RawMessage(`{ "spaced": true }`)},
		{Valid: true, Code: latchkey.Valid, Scopes: []string{}, Warnings: []string{}},
		{Valid: true, Code: latchkey.Valid, Meta: json.RawMessage(`{"a":"x\" y","b":[1, 2]}`)},
		{Valid: true, Code: latchkey.Valid, Meta: json.RawMessage("{\"a\":\t1}")},
		{Valid: true, Code: latchkey.Valid, Meta: json.RawMessage(`{"a":"x\" y","b":{"c":null}}`)},
	}
	for i, c := range cases {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&c); err != nil {
			t.Fatal(err)
		}
		got, ok := appendVerifyResponse(nil, &c)
		if !ok {
			if i < 4 {
				t.Errorf("case %d: the common shape fell back", i)
			}
			continue
		}
		if string(got) != want.String() {
			t.Errorf("case %d:\n got %s\nwant %s", i, got, want.String())
		}
	}
}

// Whatever metadata a token holds, the fast writer either writes what
// encoding/json writes or steps aside.
func FuzzVerifyResponseMeta(f *testing.F) {
	for _, m := range []string{`{}`, `{"a":1}`, `{"a":"x\" y"}`, `{ "a" : [1,2] }`, `{"é":1}`, `[]`, `{"a":"\u2028"}`} {
		f.Add([]byte(m))
	}
	f.Fuzz(func(t *testing.T, m []byte) {
		if !json.Valid(m) {
			return
		}
		r := client.VerifyResponse{Valid: true, Code: latchkey.Valid, TokenID: "x", Meta: json.RawMessage(m)}
		got, ok := appendVerifyResponse(nil, &r)
		if !ok {
			return
		}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&r); err != nil {
			t.Fatalf("encoding/json refuses meta %q that the fast writer wrote: %v", m, err)
		}
		if string(got) != want.String() {
			t.Fatalf("meta %q:\n got %s\nwant %s", m, got, want.String())
		}
	})
}

// The strict decoder either refuses a body with invalid_argument or takes
// exactly one JSON object, valid UTF-8, with no field named twice.
func FuzzDecodeStrict(f *testing.F) {
	for _, b := range append(verifyBodies, `{"name":"a","rate_limit":{"limit":1,"window":"1m"},"meta":{"a":[1,{"b":null}]}}`,
		`{"expires_at":"2030-01-01T00:00:00Z","ttl":"1h"}`, `{"meta":{"k":1,"k":2}}`) {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req client.CreateRequest
		err := decodeFrom(bytes.NewReader(b), &req)
		if err != nil {
			if latchkey.ErrorCode(err) != latchkey.EInvalid {
				t.Fatalf("decodeFrom(%q) = %v, want invalid_argument", b, err)
			}
			return
		}
		if !utf8.Valid(b) || bytes.TrimLeft(b, " \t\r\n")[0] != '{' {
			t.Fatalf("decodeFrom accepted %q", b)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		var walk func(depth int) error
		walk = func(depth int) error {
			tok, err := dec.Token()
			if err != nil {
				return err
			}
			switch tok {
			case json.Delim('{'):
				seen := map[string]bool{}
				for dec.More() {
					k, _ := dec.Token()
					if seen[k.(string)] {
						t.Fatalf("decodeFrom accepted %q, which names %q twice", b, k)
					}
					seen[k.(string)] = true
					if err := walk(depth + 1); err != nil {
						return err
					}
				}
				_, err = dec.Token()
			case json.Delim('['):
				for dec.More() {
					if err := walk(depth + 1); err != nil {
						return err
					}
				}
				_, err = dec.Token()
			}
			return err
		}
		if err := walk(0); err != nil {
			t.Fatalf("decodeFrom accepted %q, which encoding/json cannot walk: %v", b, err)
		}
	})
}

package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey/client"
)

// POST /v1/verify is the hot endpoint, and encoding/json's reflection was
// a third of its handler's time. Its request and response are read and
// written here directly for the common shape: plain ASCII strings, no
// escapes, no nulls, the field names as documented. Anything else falls
// back to encoding/json, which also words the errors; FuzzVerifyJSON holds
// the two to the same results.

var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
	hdrNoSniff = []string{"nosniff"}
)

var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// decodeVerify reads a VerifyRequest from the body, with decode's limits
// and errors.
func decodeVerify(w http.ResponseWriter, r *http.Request, req *client.VerifyRequest) error {
	bp := bodyPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			*bp = (*bp)[:0]
			bodyPool.Put(bp)
		}
	}()
	b, err := readBody(http.MaxBytesReader(w, r.Body, MaxBodyBytes), (*bp)[:0])
	*bp = b
	if err != nil {
		return decodeError(err)
	}
	if parseVerifyFast(b, req) {
		return nil
	}
	*req = client.VerifyRequest{}
	return decodeFrom(bytes.NewReader(b), req)
}

// readBody appends all of r to b.
func readBody(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// parseVerifyFast parses b into req if it is a flat JSON object of the
// known fields whose strings are plain printable ASCII; otherwise it
// returns false, and req must be reset before another decoder fills it.
func parseVerifyFast(b []byte, req *client.VerifyRequest) bool {
	p := jsonScan{b: b}
	p.ws()
	if !p.byte('{') {
		return false
	}
	p.ws()
	if p.byte('}') {
		p.ws()
		return p.end()
	}
	var seen uint8 // a field named twice goes to the strict decoder, which refuses it
	for {
		key, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if !p.byte(':') {
			return false
		}
		p.ws()
		var bit uint8
		switch string(key) {
		case "token":
			bit, ok = 1, p.strField(&req.Token)
		case "ip":
			bit, ok = 2, p.strField(&req.IP)
		case "method":
			bit, ok = 4, p.strField(&req.Method)
		case "path":
			bit, ok = 8, p.strField(&req.Path)
		case "scopes":
			bit, ok = 16, p.strArray(&req.Scopes)
		case "resource":
			bit, ok = 32, p.strField(&req.Resource)
		case "keyspace":
			bit, ok = 64, p.strField(&req.Keyspace)
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		p.ws()
		if p.byte('}') {
			p.ws()
			return p.end()
		}
		if !p.byte(',') {
			return false
		}
		p.ws()
	}
}

type jsonScan struct {
	b []byte
	i int
}

func (p *jsonScan) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScan) byte(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *jsonScan) end() bool { return p.i == len(p.b) }

// str reads a string of printable ASCII without escapes.
func (p *jsonScan) str() ([]byte, bool) {
	if !p.byte('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x7f:
			return nil, false
		}
		p.i++
	}
	return nil, false
}

func (p *jsonScan) strField(dst *string) bool {
	s, ok := p.str()
	if ok {
		*dst = string(s)
	}
	return ok
}

func (p *jsonScan) strArray(dst *[]string) bool {
	if !p.byte('[') {
		return false
	}
	out := []string{}
	p.ws()
	if p.byte(']') {
		*dst = out
		return true
	}
	for {
		s, ok := p.str()
		if !ok {
			return false
		}
		out = append(out, string(s))
		p.ws()
		if p.byte(']') {
			*dst = out
			return true
		}
		if !p.byte(',') {
			return false
		}
		p.ws()
	}
}

// writeVerify writes resp as writeJSON would, byte for byte.
func writeVerify(w http.ResponseWriter, resp *client.VerifyResponse) {
	bp := bodyPool.Get().(*[]byte)
	defer func() {
		*bp = (*bp)[:0]
		bodyPool.Put(bp)
	}()
	b, ok := appendVerifyResponse((*bp)[:0], resp)
	*bp = b
	if !ok {
		writeJSON(w, http.StatusOK, resp)
		return
	}
	// Shared header values (net/http only reads them): three allocations
	// fewer than Header.Set.
	h := w.Header()
	h["Content-Type"], h["Cache-Control"], h["X-Content-Type-Options"] = hdrJSON, hdrNoStore, hdrNoSniff
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// appendVerifyResponse appends resp's JSON (as json.Encoder with HTML
// escaping off writes it, newline included), or reports false when a
// value needs what only encoding/json does (escapes, odd times, meta to
// compact).
func appendVerifyResponse(b []byte, r *client.VerifyResponse) ([]byte, bool) {
	b = append(b, `{"valid":`...)
	b = strconv.AppendBool(b, r.Valid)
	code := r.Code.String()
	if !plain(code) {
		return b, false
	}
	b = append(b, `,"code":"`...)
	b = append(b, code...)
	b = append(b, '"')
	if r.TokenID != "" {
		if !plain(r.TokenID) {
			return b, false
		}
		b = append(b, `,"token_id":"`...)
		b = append(b, r.TokenID...)
		b = append(b, '"')
	}
	if r.Subject != "" {
		if !plain(r.Subject) {
			return b, false
		}
		b = append(b, `,"subject":"`...)
		b = append(b, r.Subject...)
		b = append(b, '"')
	}
	var ok bool
	if b, ok = appendStrings(b, `,"scopes":`, r.Scopes); !ok {
		return b, false
	}
	if r.ExpiresAt != nil {
		if b, ok = appendTime(b, `,"expires_at":`, *r.ExpiresAt); !ok {
			return b, false
		}
	}
	if len(r.Meta) > 0 {
		if !compactJSON(r.Meta) {
			return b, false
		}
		b = append(b, `,"meta":`...)
		b = append(b, r.Meta...)
	}
	if r.Remaining != nil {
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, *r.Remaining, 10)
	}
	if rl := r.RateLimit; rl != nil {
		b = append(b, `,"rate_limit":{"limit":`...)
		b = strconv.AppendInt(b, rl.Limit, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, rl.Remaining, 10)
		if b, ok = appendTime(b, `,"reset":`, rl.Reset); !ok {
			return b, false
		}
		if rl.RetryAfter != 0 {
			b = append(b, `,"retry_after":`...)
			b = strconv.AppendInt(b, rl.RetryAfter, 10)
		}
		b = append(b, '}')
	}
	if b, ok = appendStrings(b, `,"warnings":`, r.Warnings); !ok {
		return b, false
	}
	return append(b, "}\n"...), true
}

// appendStrings appends a non-empty list (omitempty) of plain strings.
func appendStrings(b []byte, key string, ss []string) ([]byte, bool) {
	if len(ss) == 0 {
		return b, true
	}
	b = append(b, key...)
	b = append(b, '[')
	for i, s := range ss {
		if !plain(s) {
			return b, false
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
	}
	return append(b, ']'), true
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds), for the years it accepts.
func appendTime(b []byte, key string, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	b = append(b, key...)
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}

// plain reports whether s needs no escaping: printable ASCII other than
// the quote, the backslash, and what encoding/json escapes regardless.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// compactJSON reports whether encoding/json would write m as is: valid,
// printable ASCII, and no whitespace outside strings (what compacting
// removes). The stored meta is like that unless someone edited the
// database by hand. It does not allocate.
func compactJSON(m json.RawMessage) bool {
	if len(m) == 2 && m[0] == '{' && m[1] == '}' {
		return true
	}
	inString, escaped := false, false
	for _, c := range m {
		switch {
		case c < 0x20 && !inString, c >= 0x7f:
			return false
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && c == ' ':
			return false
		}
	}
	return json.Valid(m)
}

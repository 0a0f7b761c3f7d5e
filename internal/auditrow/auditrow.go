// Package auditrow is how stores lay out an audit record: the fields no
// query filters on packed into one JSON column ("rest"), written by hand
// because it happens once per verification.
package auditrow

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// rest is the JSON form of the fields kept in the "rest" column.
type rest struct {
	RequestID string          `json:"request_id,omitempty"`
	Actor     string          `json:"actor,omitempty"`
	Reason    string          `json:"reason,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	UserAgent string          `json:"user_agent,omitempty"`
	Method    string          `json:"method,omitempty"`
	Path      string          `json:"path,omitempty"`
	LatencyNS int64           `json:"latency_ns,omitempty"`
	Detail    json.RawMessage `json:"detail,omitempty"`
}

// AppendRest writes the "rest" column of ev as JSON, by hand: this runs
// once per verification record, and encoding/json would cost more than
// the insert saves.
func AppendRest(b []byte, ev *latchkey.AuditEvent) []byte {
	b = append(b, '{')
	first := true
	str := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":`...)
		b = appendJSONString(b, v)
	}
	str("request_id", ev.RequestID)
	str("actor", ev.Actor)
	str("reason", ev.Reason)
	if len(ev.Scopes) > 0 {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `"scopes":[`...)
		for i, sc := range ev.Scopes {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, sc)
		}
		b = append(b, ']')
	}
	str("user_agent", ev.UserAgent)
	str("method", ev.Method)
	str("path", ev.Path)
	if ev.Latency != 0 {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, `"latency_ns":`...)
		b = strconv.AppendInt(b, int64(ev.Latency), 10)
	}
	if len(ev.Detail) > 0 {
		if !first {
			b = append(b, ',')
		}
		b = append(b, `"detail":`...)
		if json.Valid(ev.Detail) {
			b = append(b, ev.Detail...)
		} else {
			b = appendJSONString(b, string(ev.Detail))
		}
	}
	return append(b, '}')
}

// appendJSONString appends s as a JSON string: plain printable ASCII is
// copied as is, anything else goes through encoding/json.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// DecodeRest fills the packed fields of ev from a "rest" column.
func DecodeRest(data []byte, ev *latchkey.AuditEvent) error {
	var r rest
	if err := json.Unmarshal(data, &r); err != nil {
		return err
	}
	ev.RequestID, ev.Actor, ev.Reason, ev.Scopes = r.RequestID, r.Actor, r.Reason, r.Scopes
	ev.UserAgent, ev.Method, ev.Path, ev.Latency, ev.Detail = r.UserAgent, r.Method, r.Path, time.Duration(r.LatencyNS), r.Detail
	if len(ev.Scopes) == 0 {
		ev.Scopes = nil
	}
	if string(ev.Detail) == "null" { // rows migrated without detail
		ev.Detail = nil
	}
	return nil
}

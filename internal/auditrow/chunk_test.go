package auditrow

import (
	"crypto/sha256"
	"reflect"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

func benchEvent() latchkey.AuditEvent {
	return latchkey.AuditEvent{Time: time.Now(), Node: "bench-node", RequestID: "0123456789abcdef", Kind: latchkey.KindVerify,
		Action: latchkey.ActionVerify, TokenID: "AbCdEfGhIjKlMnOp", Subject: "svc-billing", Outcome: "VALID",
		Scopes: []string{"invoices:read"}, ClientIP: "198.51.100.7", UserAgent: "Go-http-client/1.1", Method: "GET", Path: "/v1/invoices", Latency: 420}
}

// BenchmarkEncodeAndChain: one record's compact encoding and its v2 chain
// hash, what the SQLite writer spends per record before SQLite.
func BenchmarkEncodeAndChain(b *testing.B) {
	ev := benchEvent()
	ch := NewChain(ChainV2, [sha256.Size]byte{}, "bench-node")
	buf := make([]byte, 0, 1<<16)
	var w Writer
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		if len(buf) > 60000 {
			buf = buf[:0]
		}
		start := len(buf)
		ev.RequestID = reqIDs[n%len(reqIDs)] // unique per request, like a real one
		n++
		buf = w.Append(buf, &ev)
		ch.Next(&ev, buf[start:])
	}
}

var reqIDs = []string{"0123456789abcdef", "1123456789abcdef", "2123456789abcdef", "3123456789abcdef"}

// Records encoded against each other decode to themselves: repeated and
// changed fields, a field emptied after being set, scopes and detail that
// come and go, time running backwards (commit order is not time order).
func TestChunkRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 1, 12, 0, 0, 123456000, time.UTC)
	evs := []latchkey.AuditEvent{
		benchEvent(),
		benchEvent(),
		{Time: at, Kind: "admin", Action: "token.revoke", Actor: "root", TokenID: "AbCdEfGhIjKlMnOp", Outcome: "OK", Reason: "leaked \"badly\"\n",
			Detail: []byte(`{"k":"v","n":[1,2]}`)},
		{Time: at.Add(-time.Second), Kind: "admin", Action: "token.revoke", Actor: "root", Outcome: "OK", Detail: []byte(`{"k":"v","n":[1,2]}`)},
		{Time: at.Add(time.Hour), Kind: "verify", Action: "verify", Outcome: "MALFORMED", Reason: "bad_checksum", Scopes: []string{"a:b", "c.*:d"}, Latency: -1},
		{Time: at.Add(time.Hour), Kind: "verify", Action: "verify", Outcome: "MALFORMED", Reason: "bad_checksum", Scopes: []string{"a:b", "c.*:e"}},
		{Time: time.Unix(0, 0).UTC(), Kind: "verify", Action: "verify", Outcome: "VALID", Scopes: []string{}},
	}
	for i := range evs {
		evs[i].Time = latchkey.TimeOf(evs[i].Time).Truncate(time.Microsecond).UTC()
	}
	var w Writer
	var b []byte
	var encs [][]byte
	for i := range evs {
		start := len(b)
		b = w.Append(b, &evs[i])
		encs = append(encs, b[start:])
	}
	r := NewReader(b)
	for i := range evs {
		var got latchkey.AuditEvent
		enc, err := r.Next(&got)
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		want := evs[i]
		want.Node = "" // the chunk names the node, not each record
		if len(want.Scopes) == 0 {
			want.Scopes = nil
		}
		if len(got.Scopes) == 0 {
			got.Scopes = nil
		}
		if !equalEvents(got, want) {
			t.Errorf("record %d:\n%+v\nwant\n%+v", i, got, want)
		}
		if string(enc) != string(encs[i]) {
			t.Errorf("record %d: its encoding reads back as %x, was %x", i, enc, encs[i])
		}
	}
	if !r.Done() {
		t.Error("bytes left after the last record")
	}
	if len(encs[1]) >= len(encs[0])/2 {
		t.Errorf("a repeated record takes %d bytes after %d: fields that repeat should cost a byte", len(encs[1]), len(encs[0]))
	}
	// The chain is deterministic, depends on every record before, and on
	// the node.
	h := func(node string, encs [][]byte) [sha256.Size]byte {
		c := NewChain(ChainV2, [sha256.Size]byte{}, node)
		var s [sha256.Size]byte
		for _, e := range encs {
			s = c.Next(nil, e)
		}
		return s
	}
	if h("n1", encs) != h("n1", encs) || h("n1", encs) == h("n2", encs) || h("n1", encs) == h("n1", encs[1:]) {
		t.Error("the v2 chain does not depend on the node and every record")
	}
}

func equalEvents(a, b latchkey.AuditEvent) bool {
	if len(a.Detail) == 0 && len(b.Detail) == 0 {
		a.Detail, b.Detail = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// Whatever bytes a chunk holds (a damaged or edited file), reading it
// never panics: it decodes, or says it does not.
func FuzzReader(f *testing.F) {
	var w Writer
	ev := benchEvent()
	f.Add(w.Append(nil, &ev))
	f.Add([]byte{0x80})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(data)
		for i := 0; !r.Done() && i < 10000; i++ {
			var ev latchkey.AuditEvent
			if _, err := r.Next(&ev); err != nil {
				return
			}
		}
	})
}

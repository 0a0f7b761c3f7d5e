package httpapi

import (
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Exports stream a filtered listing (the audit log, the tokens) as JSON
// Lines or CSV, a page at a time from the store, so that the server holds
// one page however many records go out. The answer's trailers say
// whether it is complete and how many rows it holds: a store error or a
// revoked credential part-way through ends it early, with
// Latchkey-Export-Complete: false.

// Export trailers.
const (
	trailerComplete = "Latchkey-Export-Complete"
	trailerRows     = "Latchkey-Export-Rows"
)

var auditCSVHeader = []string{"seq", "time", "node", "kind", "action", "outcome", "reason", "token_id", "subject", "actor",
	"client_ip", "user_agent", "method", "path", "request_id", "latency_ns", "scopes", "detail", "hash"}

var tokenCSVHeader = []string{"id", "prefix", "keyspace", "name", "subject", "status", "effective_status", "scopes", "roles", "tags",
	"created_at", "created_by", "expires_at", "last_used_at", "uses", "parent_id", "successor_id", "revoked_at", "revoked_reason", "meta"}

// export writes the rows of one export.
type export struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	csv  *csv.Writer // nil for JSON Lines
	rows int64
	cell []string
}

// startExport reads format= and starts the answer: name is the file's
// stem ("audit", "tokens"), header the CSV's first row.
func startExport(w http.ResponseWriter, q url.Values, name string, header []string) (*export, error) {
	format := q.Get("format")
	if format == "" {
		format = "jsonl"
	}
	if format != "jsonl" && format != "csv" {
		return nil, latchkey.Errorf(latchkey.EInvalid, "format must be jsonl or csv")
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // as long as it takes; the credential is checked again as it goes
	h := w.Header()
	ctype := "application/jsonl"
	if format == "csv" {
		ctype = "text/csv; charset=utf-8"
	}
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", `attachment; filename="latchkey-`+name+`-`+time.Now().UTC().Format("20060102T150405Z")+`.`+format+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	h.Set("Trailer", trailerComplete+", "+trailerRows)
	w.WriteHeader(http.StatusOK)
	e := &export{w: w, rc: rc}
	if format == "csv" {
		e.csv = csv.NewWriter(w)
		e.csv.Write(header)
	}
	return e, nil
}

// json writes one JSON Lines row.
func (e *export) json(v any) {
	b, _ := json.Marshal(v)
	e.w.Write(append(b, '\n'))
	e.rows++
}

// record writes one CSV row. Cells a spreadsheet would read as a formula
// (starting with = + - @, a tab or a carriage return: a hostile token
// name or user agent) are prefixed with ' (OWASP's CSV injection advice).
func (e *export) record(cells ...string) {
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			cells[i] = "'" + c
		}
	}
	e.csv.Write(cells)
	e.rows++
}

// flush sends what is buffered; false when the client has gone.
func (e *export) flush() bool {
	if e.csv != nil {
		e.csv.Flush()
		if e.csv.Error() != nil {
			return false
		}
	}
	return e.rc.Flush() == nil
}

// end sets the trailers.
func (e *export) end(complete bool) {
	e.flush()
	e.w.Header().Set(trailerComplete, strconv.FormatBool(complete))
	e.w.Header().Set(trailerRows, strconv.FormatInt(e.rows, 10))
}

func timeCell(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func jsonCell(v json.RawMessage) string {
	if len(v) == 0 || string(v) == "null" {
		return ""
	}
	return string(v)
}

// exportAudit serves GET /v1/export/audit: the records matching the
// filters of GET /v1/audit, oldest first.
func (s *Server) exportAudit(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	f, q, err := s.auditRequest(r, a, "format")
	if err != nil {
		return err
	}
	f.Ascending, f.Limit = true, latchkey.MaxPageLimit
	// The first page before the answer starts: a store that cannot be
	// read is an error status, not an empty file.
	page, err := s.Audit.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	e, err := startExport(w, q, "audit", auditCSVHeader)
	if err != nil {
		return err
	}
	for {
		for i := range page.Events {
			ev := &page.Events[i]
			if e.csv == nil {
				e.json(ev)
			} else {
				e.record(strconv.FormatInt(ev.Seq, 10), timeCell(ev.Time), ev.Node, ev.Kind, ev.Action, ev.Outcome, ev.Reason, ev.TokenID,
					ev.Subject, ev.Actor, ev.ClientIP, ev.UserAgent, ev.Method, ev.Path, ev.RequestID, strconv.FormatInt(int64(ev.Latency), 10),
					strings.Join(ev.Scopes, " "), jsonCell(ev.Detail), ev.Hash)
			}
			f.After = ev.Seq
		}
		if len(page.Events) < f.Limit {
			e.end(true)
			return nil
		}
		if !e.flush() || recheck(r) != nil {
			e.end(false)
			return nil
		}
		if page, err = s.Audit.ListAudit(r.Context(), f); err != nil {
			s.logger().Warn("audit export ended early", "err", err, "rows", e.rows)
			e.end(false)
			return nil
		}
	}
}

// exportTokens serves GET /v1/export/tokens: the tokens matching the
// filters of GET /v1/tokens, in its order (newest first by default). No secret is in a token's
// record (only its keyed hash, which is never served).
func (s *Server) exportTokens(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, append(tokenParams, "format")...); err != nil {
		return err
	}
	f, err := tokenFilter(q, a)
	if err != nil {
		return err
	}
	f.Limit = latchkey.MaxPageLimit
	page, err := s.Tokens.List(r.Context(), f)
	if err != nil {
		return err
	}
	e, err := startExport(w, q, "tokens", tokenCSVHeader)
	if err != nil {
		return err
	}
	for {
		for _, t := range page.Tokens {
			if e.csv == nil {
				e.json(t)
			} else {
				var uses string
				if t.MaxUses > 0 || t.Uses > 0 {
					uses = strconv.FormatInt(t.Uses, 10)
				}
				e.record(t.ID, t.Prefix, t.Keyspace, t.Name, t.Subject, string(t.Status), string(t.Effective), strings.Join(t.Scopes, " "),
					strings.Join(t.Roles, " "), strings.Join(t.Tags, " "), timeCell(t.CreatedAt), t.CreatedBy, timeCell(t.ExpiresAt),
					timeCell(t.LastUsedAt), uses, t.ParentID, t.SuccessorID, timeCell(t.RevokedAt), t.RevokedReason, jsonCell(t.Meta))
			}
		}
		if page.Next == "" {
			e.end(true)
			return nil
		}
		if !e.flush() || recheck(r) != nil {
			e.end(false)
			return nil
		}
		f.Cursor = page.Next
		if page, err = s.Tokens.List(r.Context(), f); err != nil {
			s.logger().Warn("token export ended early", "err", err, "rows", e.rows)
			e.end(false)
			return nil
		}
	}
}

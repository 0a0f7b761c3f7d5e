package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/audit"
)

// streamPoll is how often a stream reads the log when nothing woke it:
// records written by other nodes, or outside the pipeline, show up within
// this.
const streamPoll = 500 * time.Millisecond

// streamHeartbeat keeps idle connections (and proxies) from timing out.
const streamHeartbeat = 15 * time.Second

// streamRecheck is how often a stream checks that its credential still
// holds: revoking the token (or ending the dashboard session) ends the
// stream within this.
var streamRecheck = 5 * time.Second

// streamAudit serves GET /v1/audit/stream: audit records as server-sent
// events, oldest first, each with its seq as the event id, so a client
// that reconnects with Last-Event-ID (or ?after=) misses nothing. Without
// either it starts with records committed from now on.
func (s *Server) streamAudit(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	f, err := s.streamFilter(r, a)
	if err != nil {
		return err
	}
	st := &auditStream{w: w, r: r, rc: http.NewResponseController(w), f: f,
		checked: time.Now(), writeWait: max(streamRecheck, time.Second)} // at least a second: small socket buffers stall that long on delayed ACKs
	// The server's write timeout is for ordinary answers, not a stream.
	st.rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": latchkey audit stream\n\n")
	if err := st.rc.Flush(); err != nil {
		return nil
	}
	ctx := r.Context()
	heartbeat := time.NewTicker(streamHeartbeat)
	defer heartbeat.Stop()
	for {
		var woke <-chan struct{}
		if s.AuditWritten != nil {
			woke = s.AuditWritten()
		}
		if !st.backlog(s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.drainCh():
			return nil
		case <-woke:
		case <-time.After(min(streamPoll, max(0, streamRecheck-time.Since(st.checked)))):
		case <-heartbeat.C:
			fmt.Fprint(w, ": keep-alive\n\n") // buffered: flush sets the deadline before writing
			if st.flush() != nil {
				return nil
			}
		}
	}
}

// streamFilter reads the stream's filter, and where it starts: after
// ?after= or Last-Event-ID, else after the newest record there is.
func (s *Server) streamFilter(r *http.Request, a latchkey.Actor) (latchkey.AuditFilter, error) {
	q := r.URL.Query()
	if err := onlyParams(q, "keyspace", "token_id", "subject", "outcome", "kind", "action", "node", "client_ip", "after"); err != nil {
		return latchkey.AuditFilter{}, err
	}
	f, err := auditFilter(q, a)
	if err != nil {
		return f, err
	}
	after := q.Get("after")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		after = id
	}
	if after != "" {
		if f.After, err = strconv.ParseInt(after, 10, 64); err != nil || f.After < 0 {
			return f, latchkey.Errorf(latchkey.EInvalid, "after (or Last-Event-ID) must be a sequence number")
		}
	} else {
		page, err := s.Audit.ListAudit(r.Context(), latchkey.AuditFilter{Limit: 1})
		if err != nil {
			return f, err
		}
		if len(page.Events) > 0 {
			f.After = page.Events[0].Seq
		}
	}
	f.Ascending, f.Limit = true, latchkey.MaxPageLimit
	return f, nil
}

// auditStream is one open stream. The credential is checked every
// streamRecheck whatever the stream is doing (between pages of a backlog
// too), and no write may block longer than writeWait, so a slow reader
// cannot keep receiving records once its token is revoked.
type auditStream struct {
	w         http.ResponseWriter
	r         *http.Request
	rc        *http.ResponseController
	f         latchkey.AuditFilter
	checked   time.Time
	writeWait time.Duration
}

// stillValid rechecks the credential when it is due, and ends the stream
// with an end event when it no longer holds. (An EventSource reconnects
// and then gets the 401.)
func (st *auditStream) stillValid() bool {
	if time.Since(st.checked) < streamRecheck {
		return true
	}
	st.checked = time.Now()
	if err := recheck(st.r); err != nil {
		st.rc.SetWriteDeadline(time.Now().Add(st.writeWait))
		fmt.Fprintf(st.w, "event: end\ndata: %s\n\n", `{"reason":"credentials no longer valid"}`)
		st.rc.Flush()
		return false
	}
	return true
}

func (st *auditStream) flush() error {
	st.rc.SetWriteDeadline(time.Now().Add(st.writeWait))
	return st.rc.Flush()
}

// backlog sends every record after the last one sent, page by page. It
// reports false when the stream must end.
func (st *auditStream) backlog(s *Server) bool {
	for {
		if !st.stillValid() {
			return false
		}
		page, err := s.Audit.ListAudit(st.r.Context(), st.f)
		if err != nil {
			s.logger().Warn("audit stream: read failed", "err", err)
			return false // the client reconnects with Last-Event-ID
		}
		for i := range page.Events {
			if !st.stillValid() {
				return false
			}
			ev := &page.Events[i]
			b, _ := json.Marshal(ev)
			st.rc.SetWriteDeadline(time.Now().Add(st.writeWait))
			if _, err := fmt.Fprintf(st.w, "id: %d\nevent: audit\ndata: %s\n\n", ev.Seq, b); err != nil {
				return false // a reader stalled past the deadline reconnects
			}
			st.f.After = ev.Seq
		}
		if len(page.Events) > 0 && st.flush() != nil {
			return false
		}
		if len(page.Events) < st.f.Limit {
			return true
		}
	}
}

// verifyAudit serves GET /v1/audit/verify: the hash chain checked from
// its anchors. A broken chain is a 200 with ok=false naming the first
// broken record; errors are for a store that cannot be read.
func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	if s.FlushAudit != nil {
		s.FlushAudit(r.Context())
	}
	rep, err := audit.VerifyChain(r.Context(), s.Audit)
	if err != nil {
		return err
	}
	if rep.Nodes == nil {
		rep.Nodes = []string{}
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// auditSummary serves GET /v1/audit/summary: counts of verification
// attempts by outcome class (valid, refused, blocked), per second over
// the last five minutes and since local midnight, counted by each node
// and, in a cluster, added up across the nodes.
func (s *Server) auditSummary(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	if s.Activity == nil {
		return latchkey.Errorf(latchkey.ENotFound, "activity counts are not enabled")
	}
	if s.FlushAudit != nil {
		s.FlushAudit(r.Context()) // count what was answered before this request
	}
	sum, err := s.Activity.Counts(r.Context(), time.Now())
	if err != nil {
		// This node's counts are still worth showing; say the rest is missing.
		s.logger().Warn("activity summary: other nodes' counts unavailable", "err", err)
	}
	writeJSON(w, http.StatusOK, sum)
	return nil
}

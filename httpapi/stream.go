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
func (s *Server) streamAudit(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, "token_id", "subject", "outcome", "kind", "action", "node", "after"); err != nil {
		return err
	}
	f, err := auditFilter(q)
	if err != nil {
		return err
	}
	after := q.Get("after")
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		after = id
	}
	if after != "" {
		if f.After, err = strconv.ParseInt(after, 10, 64); err != nil || f.After < 0 {
			return latchkey.Errorf(latchkey.EInvalid, "after (or Last-Event-ID) must be a sequence number")
		}
	} else {
		// From now on: after the newest record there is.
		page, err := s.Audit.ListAudit(r.Context(), latchkey.AuditFilter{Limit: 1})
		if err != nil {
			return err
		}
		if len(page.Events) > 0 {
			f.After = page.Events[0].Seq
		}
	}
	f.Ascending, f.Limit = true, latchkey.MaxPageLimit
	rc := http.NewResponseController(w)
	// The server's write timeout is for ordinary answers, not a stream.
	rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, ": latchkey audit stream\n\n")
	if err := rc.Flush(); err != nil {
		return nil
	}
	ctx := r.Context()
	heartbeat := time.NewTicker(streamHeartbeat)
	defer heartbeat.Stop()
	// The credential is checked every streamRecheck whatever the stream is
	// doing: between pages of a backlog too, and no write may block longer
	// than that, so a slow reader cannot keep receiving records once its
	// token is revoked.
	checked := time.Now()
	writeWait := max(streamRecheck, time.Second) // at least a second: small socket buffers stall that long on delayed ACKs
	stillValid := func() bool {
		checked = time.Now()
		if err := recheck(r); err != nil {
			// The credential no longer holds: say so and end. (An
			// EventSource reconnects and then gets the 401.)
			rc.SetWriteDeadline(time.Now().Add(writeWait))
			fmt.Fprintf(w, "event: end\ndata: %s\n\n", `{"reason":"credentials no longer valid"}`)
			rc.Flush()
			return false
		}
		return true
	}
	flush := func() error {
		rc.SetWriteDeadline(time.Now().Add(writeWait))
		return rc.Flush()
	}
	for {
		var woke <-chan struct{}
		if s.AuditWritten != nil {
			woke = s.AuditWritten()
		}
		for {
			if time.Since(checked) >= streamRecheck && !stillValid() {
				return nil
			}
			page, err := s.Audit.ListAudit(ctx, f)
			if err != nil {
				s.logger().Warn("audit stream: read failed", "err", err)
				return nil // the client reconnects with Last-Event-ID
			}
			for i := range page.Events {
				if time.Since(checked) >= streamRecheck && !stillValid() {
					return nil
				}
				ev := &page.Events[i]
				b, _ := json.Marshal(ev)
				rc.SetWriteDeadline(time.Now().Add(writeWait))
				if _, err := fmt.Fprintf(w, "id: %d\nevent: audit\ndata: %s\n\n", ev.Seq, b); err != nil {
					return nil // a reader stalled past the deadline reconnects
				}
				f.After = ev.Seq
			}
			if len(page.Events) > 0 {
				if flush() != nil {
					return nil
				}
			}
			if len(page.Events) < f.Limit {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.drainCh():
			return nil
		case <-woke:
		case <-time.After(min(streamPoll, max(0, streamRecheck-time.Since(checked)))):
		case <-heartbeat.C:
			fmt.Fprint(w, ": keep-alive\n\n") // buffered: flush sets the deadline before writing
			if flush() != nil {
				return nil
			}
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

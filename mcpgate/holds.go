package mcpgate

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/edge"
)

// Errors of Decide.
var (
	ErrNoHold      = latchkey.Errorf(latchkey.ENotFound, "no such held call on this node")
	ErrDecided     = latchkey.Errorf(latchkey.EConflict, "the call is no longer held")
	ErrSelfApprove = latchkey.Errorf(latchkey.EPermissionDenied, "a call cannot be decided with the token that made it")
)

// Holds are the tool calls waiting for a person (the tools a server's
// approval patterns name). A held call's agent waits, its stream kept
// alive, until someone holding latchkey:mcp:approve approves or denies it,
// or the approval timeout passes, or the agent or its session goes away.
// Every hold and decision is on record. Holds live on the node that holds
// the agent's request.
type Holds struct {
	Audit Recorder
	Node  string
	Now   func() time.Time

	mu     sync.Mutex
	byID   map[string]*hold
	recent []latchkey.HeldCall // the last decided, newest last
}

type hold struct {
	info     latchkey.HeldCall
	key      uint64
	decision chan struct{} // closed when decided
}

func (h *Holds) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Wait holds the call described by info until it is decided; it returns
// the final state ("approved", "denied", "expired", "cancelled") and who
// decided.
func (h *Holds) Wait(ctx context.Context, info latchkey.HeldCall, key uint64, timeout time.Duration) (state, by string) {
	info.ID, _ = edge.NewSessionID()
	info.Node, info.State = h.Node, "held"
	info.Created = h.now().UTC()
	info.Deadline = info.Created.Add(timeout)
	hd := &hold{info: info, key: key, decision: make(chan struct{})}
	h.mu.Lock()
	if h.byID == nil {
		h.byID = map[string]*hold{}
	}
	h.byID[info.ID] = hd
	h.mu.Unlock()
	h.record(hd, latchkey.ActionMCPHold, "held")
	t := time.NewTimer(timeout)
	defer t.Stop()
	final := "cancelled"
	select {
	case <-hd.decision:
	case <-t.C:
		final = "expired"
	case <-ctx.Done():
	}
	h.mu.Lock()
	if hd.info.State == "held" {
		hd.info.State = final
		hd.info.DecidedAt = h.now().UTC()
	}
	delete(h.byID, info.ID)
	h.recent = append(h.recent, hd.info)
	if len(h.recent) > 50 {
		h.recent = h.recent[1:]
	}
	out := hd.info
	h.mu.Unlock()
	if out.State == "expired" || out.State == "cancelled" {
		h.record(hd, latchkey.ActionMCPDecision, out.State)
	}
	return out.State, out.DecidedBy
}

// Decide approves or denies held call id on behalf of the token by.
func (h *Holds) Decide(id string, approve bool, by string) (latchkey.HeldCall, error) {
	h.mu.Lock()
	hd, ok := h.byID[id]
	if !ok {
		for _, r := range h.recent {
			if r.ID == id {
				h.mu.Unlock()
				return r, ErrDecided
			}
		}
		h.mu.Unlock()
		return latchkey.HeldCall{}, ErrNoHold
	}
	if hd.info.State != "held" {
		h.mu.Unlock()
		return hd.info, ErrDecided
	}
	if by != "" && by == hd.info.TokenID {
		h.mu.Unlock()
		return hd.info, ErrSelfApprove
	}
	hd.info.State = "denied"
	if approve {
		hd.info.State = "approved"
	}
	hd.info.DecidedBy, hd.info.DecidedAt = by, h.now().UTC()
	close(hd.decision)
	out := hd.info
	h.mu.Unlock()
	h.record(hd, latchkey.ActionMCPDecision, out.State)
	return out, nil
}

// List returns the calls held now, oldest first, then the last decided.
func (h *Holds) List() (held, decided []latchkey.HeldCall) {
	h.mu.Lock()
	defer h.mu.Unlock()
	held = []latchkey.HeldCall{}
	for _, hd := range h.byID {
		held = append(held, hd.info)
	}
	sort.Slice(held, func(i, j int) bool { return held[i].Created.Before(held[j].Created) })
	decided = append([]latchkey.HeldCall{}, h.recent...)
	return held, decided
}

func (h *Holds) record(hd *hold, action, state string) {
	if h.Audit == nil {
		return
	}
	h.mu.Lock()
	info := hd.info
	h.mu.Unlock()
	detail, _ := json.Marshal(struct {
		Hold      string          `json:"hold"`
		Server    string          `json:"server"`
		Tool      string          `json:"tool"`
		Session   string          `json:"session"`
		Arguments json.RawMessage `json:"arguments,omitempty"`
	}{info.ID, info.Server, info.Tool, info.Session, info.Arguments})
	t := h.now()
	h.Audit.RecordOn(hd.key, func(ev *latchkey.AuditEvent) {
		ev.Time, ev.Node, ev.Kind, ev.Action = t, info.Node, latchkey.KindSession, action
		ev.TokenID, ev.Subject, ev.ClientIP = info.TokenID, info.Subject, info.ClientIP
		ev.Outcome, ev.Reason, ev.Detail = latchkey.OutcomeOK, state, detail
		ev.RequestID = info.ID
		if action == latchkey.ActionMCPDecision {
			ev.Actor = info.DecidedBy
		}
	})
}

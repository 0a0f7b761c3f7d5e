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
	ErrNoHold      = latchkey.Errorf(latchkey.ENotFound, "no such held call")
	ErrDecided     = latchkey.Errorf(latchkey.EConflict, "the call is no longer held")
	ErrSelfApprove = latchkey.Errorf(latchkey.EPermissionDenied, "a call cannot be decided with the token that made it")
)

const (
	holdPrefix     = "mcp.hold/"     // a held call, while it waits (every node lists it)
	decisionPrefix = "mcp.decision/" // a decision made on another node than the holding one
)

// Holds are the tool calls waiting for a person (the tools a server's
// approval patterns name). A held call's agent waits, its stream kept
// alive, until someone holding latchkey:mcp:approve approves or denies it,
// or the approval timeout passes, or the agent or its session goes away.
// Every hold and decision is on record.
//
// A call is held on the node that holds the agent's request. With a Store
// shared by the nodes (PostgreSQL), every node lists every node's held
// calls and any node can decide one: the decision is written to the
// store, and the holding node, which looks for it every PollInterval,
// applies it.
type Holds struct {
	Audit Recorder
	Node  string
	Now   func() time.Time
	// Store shares held calls and decisions between nodes (nil: this
	// node's only).
	Store SettingStore
	// PollInterval is how often a node looks for decisions made elsewhere
	// on its held calls (default 250ms).
	PollInterval time.Duration

	mu     sync.Mutex
	byID   map[string]*hold
	recent []latchkey.HeldCall // the last decided, newest last
}

type hold struct {
	info     latchkey.HeldCall
	key      uint64
	decision chan struct{} // closed when decided
}

// remoteDecision is what a node that does not hold a call writes.
type remoteDecision struct {
	Approve bool      `json:"approve"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

func (h *Holds) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 5*time.Second)
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
	if h.Store != nil {
		b, _ := json.Marshal(info)
		sctx, cancel := storeCtx()
		h.Store.PutSetting(sctx, holdPrefix+info.ID, string(b)) // unshared if the store is down: still decidable here
		cancel()
		defer func() {
			sctx, cancel := storeCtx()
			h.Store.DeleteSetting(sctx, holdPrefix+info.ID)
			h.Store.DeleteSetting(sctx, decisionPrefix+info.ID)
			cancel()
		}()
	}
	h.record(hd, latchkey.ActionMCPHold, "held")
	t := time.NewTimer(timeout)
	defer t.Stop()
	var poll <-chan time.Time
	if h.Store != nil {
		iv := h.PollInterval
		if iv <= 0 {
			iv = 250 * time.Millisecond
		}
		tk := time.NewTicker(iv)
		defer tk.Stop()
		poll = tk.C
	}
	final := "cancelled"
wait:
	for {
		select {
		case <-hd.decision:
			break wait
		case <-t.C:
			final = "expired"
			break wait
		case <-ctx.Done():
			break wait
		case <-poll:
			h.applyRemote(hd)
		}
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

// applyRemote applies a decision another node wrote for hd.
func (h *Holds) applyRemote(hd *hold) {
	sctx, cancel := storeCtx()
	v, ok, err := h.Store.GetSetting(sctx, decisionPrefix+hd.info.ID)
	cancel()
	var rd remoteDecision
	if err != nil || !ok || json.Unmarshal([]byte(v), &rd) != nil {
		return
	}
	h.decideLocal(hd.info.ID, rd.Approve, rd.By)
}

// Decide approves or denies held call id on behalf of the token by: here
// when this node holds it, else through the store for the node that does.
func (h *Holds) Decide(id string, approve bool, by string) (latchkey.HeldCall, error) {
	out, err := h.decideLocal(id, approve, by)
	if err != ErrNoHold || h.Store == nil {
		return out, err
	}
	sctx, cancel := storeCtx()
	defer cancel()
	v, ok, err := h.Store.GetSetting(sctx, holdPrefix+id)
	if err != nil {
		return latchkey.HeldCall{}, err
	}
	var info latchkey.HeldCall
	if !ok || json.Unmarshal([]byte(v), &info) != nil || !info.Deadline.After(h.now()) {
		return latchkey.HeldCall{}, ErrNoHold
	}
	if by != "" && by == info.TokenID {
		return info, ErrSelfApprove
	}
	b, _ := json.Marshal(remoteDecision{Approve: approve, By: by, At: h.now().UTC()})
	stored, err := h.Store.PutSettingIfAbsent(sctx, decisionPrefix+id, string(b))
	if err != nil {
		return latchkey.HeldCall{}, err
	}
	if stored != string(b) {
		return info, ErrDecided // someone else decided first
	}
	info.State, info.DecidedBy, info.DecidedAt = "denied", by, h.now().UTC()
	if approve {
		info.State = "approved"
	}
	return info, nil
}

func (h *Holds) decideLocal(id string, approve bool, by string) (latchkey.HeldCall, error) {
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

// List returns the calls held now, oldest first (every node's, with a
// shared store), then the last decided on this node.
func (h *Holds) List() (held, decided []latchkey.HeldCall) {
	h.mu.Lock()
	held = []latchkey.HeldCall{}
	local := map[string]bool{}
	for id, hd := range h.byID {
		held = append(held, hd.info)
		local[id] = true
	}
	decided = append([]latchkey.HeldCall{}, h.recent...)
	h.mu.Unlock()
	if h.Store != nil {
		sctx, cancel := storeCtx()
		all, err := h.Store.SettingsWithPrefix(sctx, holdPrefix)
		cancel()
		now := h.now()
		for _, v := range all {
			var info latchkey.HeldCall
			if err != nil || json.Unmarshal([]byte(v), &info) != nil || local[info.ID] || !info.Deadline.After(now) {
				continue // this node's (listed above), or past its deadline (its node is gone)
			}
			held = append(held, info)
		}
	}
	sort.Slice(held, func(i, j int) bool { return held[i].Created.Before(held[j].Created) })
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

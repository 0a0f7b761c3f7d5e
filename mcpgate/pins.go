package mcpgate

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// SettingStore is where pins are kept: the store's settings, shared by
// every node.
type SettingStore interface {
	GetSetting(ctx context.Context, key string) (string, bool, error)
	PutSettingIfAbsent(ctx context.Context, key, value string) (string, error)
	PutSetting(ctx context.Context, key, value string) error
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
	DeleteSetting(ctx context.Context, key string) error
}

const (
	pinPrefix     = "mcp.pin/"
	pendingPrefix = "mcp.pending/"
)

// ErrNoChange: there is no pending definition with that fingerprint.
var ErrNoChange = latchkey.Errorf(latchkey.ENotFound, "no pending definition of that tool with that fingerprint")

// Pins fingerprints each upstream tool definition the first time any node
// sees it, and refuses a tool whose definition later differs (a "rug
// pull": a harmless tool rewritten into an instruction to the model)
// until an administrator accepts the new one.
type Pins struct {
	Store  SettingStore
	Audit  Recorder
	Node   string
	Logger interface{ Warn(string, ...any) }
	Now    func() time.Time

	mu    sync.Mutex
	known map[string]string // key → pinned fingerprint, as last read
	seen  map[string]string // key → the pending fingerprint already reported
}

func pinKey(server, tool string) string { return server + "/" + tool }

func (p *Pins) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Check reports whether the tool's definition (fingerprint fp, canonical
// form canon) is the pinned one, pinning it when the tool has none. A
// changed definition is recorded (mcp.tool_changed, a webhook) once per
// new fingerprint and kept as pending.
func (p *Pins) Check(ctx context.Context, server, tool, fp string, canon []byte) (bool, error) {
	key := pinKey(server, tool)
	p.mu.Lock()
	if p.known[key] == fp {
		p.mu.Unlock()
		return true, nil
	}
	p.mu.Unlock()
	// Not known to match: read (or make) the pin. Another node may have
	// pinned it, or an administrator accepted a new definition.
	val, _ := json.Marshal(latchkey.ToolPin{Server: server, Tool: tool, Fingerprint: fp, Definition: canon, PinnedAt: p.now().UTC()})
	stored, err := p.Store.PutSettingIfAbsent(ctx, pinPrefix+key, string(val))
	if err != nil {
		return false, err
	}
	var pin latchkey.ToolPin
	if err := json.Unmarshal([]byte(stored), &pin); err != nil {
		return false, err
	}
	p.mu.Lock()
	if p.known == nil {
		p.known, p.seen = map[string]string{}, map[string]string{}
	}
	p.known[key] = pin.Fingerprint
	reported := p.seen[key] == fp
	if pin.Fingerprint != fp {
		p.seen[key] = fp
	}
	p.mu.Unlock()
	if pin.Fingerprint == fp {
		return true, nil
	}
	if !reported {
		ch, _ := json.Marshal(latchkey.ToolChange{Fingerprint: fp, Definition: canon, Seen: p.now().UTC()})
		if err := p.Store.PutSetting(ctx, pendingPrefix+key, string(ch)); err != nil {
			return false, err
		}
		p.record(latchkey.KindDetect, latchkey.ActionMCPToolChanged, "", server, tool, pin.Fingerprint, fp)
	}
	return false, nil
}

func (p *Pins) record(kind, action, actor, server, tool, was, now string) {
	if p.Audit == nil {
		return
	}
	detail, _ := json.Marshal(map[string]string{"server": server, "tool": tool, "pinned": was, "fingerprint": now})
	node, t := p.Node, p.now()
	p.Audit.RecordOn(0, func(ev *latchkey.AuditEvent) {
		ev.Time, ev.Node, ev.Kind, ev.Action, ev.Actor = t, node, kind, action, actor
		ev.Outcome, ev.Detail = latchkey.OutcomeOK, detail
		if action == latchkey.ActionMCPToolChanged {
			ev.Reason = "definition_changed"
		}
	})
}

// List returns every pin, with its pending change if any, by server and
// tool.
func (p *Pins) List(ctx context.Context) ([]latchkey.ToolPin, error) {
	pins, err := p.Store.SettingsWithPrefix(ctx, pinPrefix)
	if err != nil {
		return nil, err
	}
	pending, err := p.Store.SettingsWithPrefix(ctx, pendingPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]latchkey.ToolPin, 0, len(pins))
	for k, v := range pins {
		var pin latchkey.ToolPin
		if json.Unmarshal([]byte(v), &pin) != nil {
			continue
		}
		if pv, ok := pending[pendingPrefix+strings.TrimPrefix(k, pinPrefix)]; ok {
			var ch latchkey.ToolChange
			if json.Unmarshal([]byte(pv), &ch) == nil && ch.Fingerprint != pin.Fingerprint {
				pin.Pending = &ch
			}
		}
		out = append(out, pin)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Server != out[j].Server {
			return out[i].Server < out[j].Server
		}
		return out[i].Tool < out[j].Tool
	})
	return out, nil
}

// Accept makes the pending definition with fingerprint fp the pinned
// one, on behalf of the administrator actor (a token id).
func (p *Pins) Accept(ctx context.Context, server, tool, fp, actor string) (latchkey.ToolPin, error) {
	key := pinKey(server, tool)
	v, ok, err := p.Store.GetSetting(ctx, pendingPrefix+key)
	if err != nil {
		return latchkey.ToolPin{}, err
	}
	var ch latchkey.ToolChange
	if !ok || json.Unmarshal([]byte(v), &ch) != nil || ch.Fingerprint != fp {
		return latchkey.ToolPin{}, ErrNoChange
	}
	old := ""
	if v, ok, _ := p.Store.GetSetting(ctx, pinPrefix+key); ok {
		var pin latchkey.ToolPin
		if json.Unmarshal([]byte(v), &pin) == nil {
			old = pin.Fingerprint
		}
	}
	pin := latchkey.ToolPin{Server: server, Tool: tool, Fingerprint: fp, Definition: ch.Definition, PinnedAt: p.now().UTC()}
	val, _ := json.Marshal(pin)
	// The pin first, then the pending entry: a crash between the two leaves
	// the new definition accepted and a stale pending entry that List
	// hides (it equals the pin).
	if err := p.Store.PutSetting(ctx, pinPrefix+key, string(val)); err != nil {
		return latchkey.ToolPin{}, err
	}
	if err := p.Store.DeleteSetting(ctx, pendingPrefix+key); err != nil {
		return latchkey.ToolPin{}, err
	}
	p.mu.Lock()
	if p.known != nil {
		delete(p.known, key)
		delete(p.seen, key)
	}
	p.mu.Unlock()
	p.record(latchkey.KindAdmin, latchkey.ActionMCPToolAccepted, actor, server, tool, old, fp)
	return pin, nil
}

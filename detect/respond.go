package detect

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// BlockStore persists blocks and alert records. latchkey.Store satisfies
// it.
type BlockStore interface {
	PutBlock(ctx context.Context, b latchkey.Block, ev *latchkey.AuditEvent) error
	AppendAudit(ctx context.Context, evs []latchkey.AuditEvent) error
}

// TokenActions reads, suspends and revokes tokens. *tokens.Service
// satisfies it.
type TokenActions interface {
	Get(ctx context.Context, id string) (*latchkey.Token, error)
	Suspend(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error)
	Revoke(ctx context.Context, a latchkey.Actor, id, reason string) (*latchkey.Token, error)
}

// adminToken reports whether t holds a scope of latchkey's own API. Only
// grants that start with "latchkey:" cover those ("*" does not: an
// application token holding it is no administrator).
func adminToken(t *latchkey.Token) bool {
	for _, sc := range t.Scopes {
		if strings.HasPrefix(sc, "latchkey:") {
			return true
		}
	}
	return false
}

// StoreResponder carries out findings against the store and the token
// service, recording each as an audit event (kind detect) with the rule
// and its evidence.
type StoreResponder struct {
	Store  BlockStore
	Tokens TokenActions
	Node   string
}

// actor is how the detector appears in records: "latchkey:detector".
var actor = latchkey.Actor{System: "detector", Scopes: []string{latchkey.AdminScope}}

// alertAction names the audit record of a token finding.
var alertAction = map[string]string{
	RuleSecretMismatch: latchkey.ActionLeakSuspected,
	RuleRevokedReuse:   latchkey.ActionTokenReuse,
	RuleNetworkSpread:  "token.network_spread",
	RuleIPNotAllowed:   "token.ip_violations",
}

// Respond implements Responder.
func (r *StoreResponder) Respond(ctx context.Context, f Finding) error {
	detail := map[string]any{"rule": f.Rule, "evidence": f.Evidence}
	ev := latchkey.AuditEvent{Time: f.At, Node: r.Node, Kind: latchkey.KindDetect, Actor: "latchkey:detector",
		TokenID: f.TokenID, Outcome: latchkey.OutcomeOK, Reason: f.Rule}
	if f.Source != "" {
		ev.Action, ev.ClientIP = latchkey.ActionSourceBlocked, f.Source
		detail["until"] = f.Until
		ev.Detail, _ = json.Marshal(detail)
		return r.Store.PutBlock(ctx, latchkey.Block{Source: f.Source, Until: f.Until, Rule: f.Rule,
			Reason: reasonText(f), CreatedAt: latchkey.TimeOf(time.Now())}, &ev)
	}
	// The token change first (its own audit record names the detector as
	// the actor), then the alert record with the evidence. A token already
	// suspended or revoked is not an error: acting twice is harmless.
	var actErr error
	if f.Rule == RuleSecretMismatch && f.Action != ActAlert {
		// Anyone who knows an id can send wrong secrets for it: that never
		// locks out a credential of latchkey's own API (docs/architecture.md §6).
		t, err := r.Tokens.Get(ctx, f.TokenID)
		if err != nil {
			return err
		}
		if adminToken(t) {
			detail["exempt"] = "the token holds an admin API scope: wrong secrets for its public id never suspend or revoke it"
			f.Action = ActAlert
		}
	}
	switch f.Action {
	case ActSuspend:
		_, actErr = r.Tokens.Suspend(ctx, actor, f.TokenID, "detector: "+f.Rule)
	case ActRevoke:
		_, actErr = r.Tokens.Revoke(ctx, actor, f.TokenID, "detector: "+f.Rule)
	}
	taken := string(f.Action)
	switch code := latchkey.ErrorCode(actErr); code {
	case "":
	case latchkey.EConflict:
		taken = string(f.Action) + " (already done)"
	default:
		taken = string(f.Action) + " failed: " + latchkey.ErrorMessage(actErr)
	}
	detail["action"] = taken
	ev.Action = alertAction[f.Rule]
	if ev.Action == "" {
		ev.Action = "detect." + f.Rule
	}
	if ip, ok := f.Evidence["client_ip"].(string); ok {
		ev.ClientIP = ip
	} else if ip, ok := f.Evidence["last_client_ip"].(string); ok {
		ev.ClientIP = ip
	}
	ev.Detail, _ = json.Marshal(detail)
	if err := r.Store.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
		return err
	}
	if code := latchkey.ErrorCode(actErr); code != "" && code != latchkey.EConflict {
		return actErr
	}
	return nil
}

func reasonText(f Finding) string {
	b, _ := json.Marshal(f.Evidence)
	return string(b)
}

// Blocks is the admin view of blocks: listed from the store (so blocks
// made by other nodes show too) and removed from memory and the store.
type Blocks struct {
	Detector *Detector
	Store    interface {
		ListBlocks(ctx context.Context, now time.Time) ([]latchkey.Block, error)
		DeleteBlock(ctx context.Context, source string, ev *latchkey.AuditEvent) (bool, error)
	}
	Node string
}

// Changed applies a block put or lifted on another node: the block on
// source is read back from the store and installed, or lifted when the
// store no longer holds it.
func (b *Blocks) Changed(ctx context.Context, source string) error {
	k, err := ParseSource(source)
	if err != nil {
		return err
	}
	blocks, err := b.Store.ListBlocks(ctx, time.Now())
	if err != nil {
		return err
	}
	for _, bl := range blocks {
		if bl.Source == source {
			b.Detector.Block(k, bl.Until)
			return nil
		}
	}
	b.Detector.Unblock(k)
	return nil
}

// List returns the blocks in force.
func (b *Blocks) List(ctx context.Context) ([]latchkey.Block, error) {
	return b.Store.ListBlocks(ctx, time.Now())
}

// Remove lifts the block on source (an address, or an IPv6 /64), with an
// audit event naming who lifted it.
func (b *Blocks) Remove(ctx context.Context, a latchkey.Actor, source string) error {
	k, err := ParseSource(source)
	if err != nil {
		return err
	}
	s := SourceString(k)
	actorName := a.TokenID
	if actorName == "" {
		actorName = "latchkey"
	}
	ev := &latchkey.AuditEvent{Time: time.Now(), Node: b.Node, RequestID: a.RequestID, Kind: latchkey.KindAdmin,
		Action: latchkey.ActionSourceUnblocked, Actor: actorName, Outcome: latchkey.OutcomeOK, ClientIP: s,
		UserAgent: a.UserAgent}
	inMemory := b.Detector != nil && b.Detector.Unblock(k)
	stored, err := b.Store.DeleteBlock(ctx, s, ev)
	if err != nil {
		return err
	}
	if !inMemory && !stored {
		return latchkey.Errorf(latchkey.ENotFound, "%s is not blocked", s)
	}
	return nil
}

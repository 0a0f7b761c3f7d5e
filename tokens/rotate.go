package tokens

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
)

// Rotate issues a successor to token id with the same grants and a new
// secret, and returns it with its plaintext (shown once) and the old token
// as it now stands. The old token keeps working until min(its expiry, now+grace),
// then answers EXPIRED (reason rotated); tokens derived from it end then
// too. Rotating a token that no longer works, or was already rotated, is
// EConflict.
func (s *Service) Rotate(ctx context.Context, a latchkey.Actor, id string, grace time.Duration) (successor *latchkey.Token, pt secret.Plaintext, old *latchkey.Token, err error) {
	if grace < 0 || grace > MaxGrace {
		return nil, secret.Plaintext{}, nil, latchkey.Errorf(latchkey.EInvalid, "grace must be between 0 and %s", latchkey.Duration(MaxGrace))
	}
	s.flushUsage(ctx)
	now := s.now()
	err = s.apply(ctx, func(tx latchkey.Tx, changed func(string)) error {
		old, err = tx.GetToken(ctx, id)
		if err != nil {
			return err
		}
		if err := canManage(a, old); err != nil {
			return err
		}
		if old.SuccessorID != "" {
			return latchkey.Errorf(latchkey.EConflict, "token %s was already rotated, to %s; rotate that one", id, old.SuccessorID)
		}
		if err := usable(old, now, "rotated"); err != nil {
			return err
		}
		var parts secret.Parts
		pt, parts, err = secret.Generate(old.Prefix, s.rand())
		if err != nil {
			return fmt.Errorf("tokens: generate: %w", err)
		}
		succ := old.Clone()
		succ.ID, succ.Hash = parts.ID, s.Hasher.Sum(parts.ID, &parts.Secret)
		succ.CreatedAt, succ.CreatedBy, succ.Version = now, createdBy(a), 1
		succ.PredecessorID, succ.SuccessorID, succ.RotatedAt = old.ID, "", time.Time{}
		succ.SeriesID = old.Series()
		succ.LastUsedAt, succ.Uses = time.Time{}, 0
		if !succ.NotBefore.After(now) {
			succ.NotBefore = time.Time{}
		}
		// A fresh lifetime as long as the old one's, within the policy and
		// never past the parent's expiry.
		succ.ExpiresAt = time.Time{}
		if !old.ExpiresAt.IsZero() {
			succ.ExpiresAt = now.Add(old.ExpiresAt.Sub(old.CreatedAt))
		} else if s.Policy.DefaultTTL > 0 {
			succ.ExpiresAt = now.Add(s.Policy.DefaultTTL)
		}
		if m := s.Policy.MaxLifetime; m > 0 && (succ.ExpiresAt.IsZero() || succ.ExpiresAt.Sub(now) > m) {
			succ.ExpiresAt = now.Add(m)
		}
		if old.ParentID != "" {
			parent, err := tx.GetToken(ctx, old.ParentID)
			if err != nil {
				return err
			}
			if !parent.ExpiresAt.IsZero() && (succ.ExpiresAt.IsZero() || succ.ExpiresAt.After(parent.ExpiresAt)) {
				succ.ExpiresAt = parent.ExpiresAt
			}
		}
		end := now.Add(grace)
		if !old.ExpiresAt.IsZero() && old.ExpiresAt.Before(end) {
			end = old.ExpiresAt
		}
		old.SuccessorID, old.RotatedAt, old.ExpiresAt = succ.ID, now, end
		if err := tx.CreateToken(ctx, succ, s.event(a, latchkey.ActionTokenCreate, succ, now,
			grantsDetail(succ, map[string]any{"predecessor_id": old.ID}))); err != nil {
			return err
		}
		ev := s.event(a, latchkey.ActionTokenRotate, old, now, map[string]any{
			"successor_id": succ.ID, "grace": latchkey.Duration(grace).String(), "grace_ends_at": end})
		if err := tx.UpdateToken(ctx, old, ev); err != nil {
			return err
		}
		changed(old.ID)
		changed(succ.ID)
		if err := s.cutDescendants(ctx, tx, a, old, now, changed); err != nil {
			return err
		}
		successor = succ
		return nil
	})
	if err != nil {
		return nil, secret.Plaintext{}, nil, err
	}
	return successor, pt, old, nil
}

// cutDescendants ends every descendant of t no later than t ends: a
// derived token never outlives its parent.
func (s *Service) cutDescendants(ctx context.Context, tx latchkey.Tx, a latchkey.Actor, t *latchkey.Token, now time.Time, changed func(string)) error {
	toks, err := tx.SelectTokens(ctx, latchkey.TokenSelector{Parent: t.ID})
	if err != nil {
		return err
	}
	for _, d := range toks {
		if d.Status == latchkey.StatusRevoked || (!d.ExpiresAt.IsZero() && !d.ExpiresAt.After(t.ExpiresAt)) {
			continue
		}
		d.ExpiresAt = t.ExpiresAt
		ev := s.event(a, latchkey.ActionTokenExpire, d, now, map[string]any{"expires_at": d.ExpiresAt, "cascade_from": t.ID})
		ev.Reason = "ancestor_rotated"
		if err := tx.UpdateToken(ctx, d, ev); err != nil {
			return err
		}
		changed(d.ID)
	}
	return nil
}

// AnnounceRotationDue records a token.rotation_due event (and so a
// rotation.due webhook) once for each token past the policy's rotation
// age that has none yet. The daemon runs it every hour; a run is
// check-then-record, so runs never overlap.
func (s *Service) AnnounceRotationDue(ctx context.Context) error {
	if s.Policy.RotationAge <= 0 {
		return nil
	}
	s.rotationMu.Lock()
	defer s.rotationMu.Unlock()
	f := latchkey.TokenFilter{RotationDue: true, Limit: latchkey.MaxPageLimit}
	for {
		page, err := s.List(ctx, f)
		if err != nil {
			return fmt.Errorf("rotation due: listing: %w", err)
		}
		for _, t := range page.Tokens {
			seen, err := s.Store.ListAudit(ctx, latchkey.AuditFilter{TokenID: t.ID, Action: latchkey.ActionRotationDue, Limit: 1})
			if err != nil || len(seen.Events) > 0 {
				continue
			}
			now := s.now()
			detail, _ := json.Marshal(map[string]any{"created_at": t.CreatedAt, "age": latchkey.Duration(now.Sub(t.CreatedAt).Round(time.Hour)).String()})
			ev := latchkey.AuditEvent{Time: now, Node: s.Node, Kind: latchkey.KindAdmin, Action: latchkey.ActionRotationDue,
				Actor: "latchkey", TokenID: t.ID, Subject: t.Subject, Outcome: latchkey.OutcomeOK, Detail: detail}
			if err := s.Store.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
				return fmt.Errorf("rotation due: recording: %w", err)
			}
		}
		if page.Next == "" {
			return nil
		}
		f.Cursor = page.Next
	}
}

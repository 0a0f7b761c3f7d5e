package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// MaxLeakReports bounds the matches in one report.
const MaxLeakReports = 100

// ReportLeaks handles a leak report: each match that is a real token (its
// secret checked against the keyed hash, not just its id) is revoked at
// once, with everything derived from it; every match is recorded as a
// leak.reported audit event. The caller has already checked the report's
// signature or the admin credential.
func (s *Service) ReportLeaks(ctx context.Context, a latchkey.Actor, reports []client.LeakReport) ([]client.LeakResult, error) {
	if len(reports) == 0 {
		return nil, latchkey.Errorf(latchkey.EInvalid, "the report lists no tokens")
	}
	if len(reports) > MaxLeakReports {
		return nil, latchkey.Errorf(latchkey.EInvalid, "at most %d tokens per report", MaxLeakReports)
	}
	out := make([]client.LeakResult, len(reports))
	for i, r := range reports {
		sum := sha256.Sum256([]byte(r.Token))
		res := client.LeakResult{TokenHash: hex.EncodeToString(sum[:]), TokenType: secret.Redact(r.Type), Label: client.LabelFalsePositive}
		outcome, id := s.judgeLeak(ctx, r.Token)
		detail := map[string]any{"url": secret.Redact(r.URL), "source": secret.Redact(r.Source), "type": res.TokenType, "token_hash": res.TokenHash}
		switch outcome {
		case "real", "already_revoked":
			res.Label, res.TokenID = client.LabelTruePositive, id
			if outcome == "real" {
				if _, err := s.Revoke(ctx, a, id, "leaked: reported by a secret scanner at "+detail["url"].(string)); err != nil &&
					latchkey.ErrorCode(err) != latchkey.EConflict {
					return nil, err // the store failed: the reporter retries
				}
			}
		}
		detail["result"] = outcome
		raw, _ := json.Marshal(detail)
		ev := latchkey.AuditEvent{Time: s.now(), Node: s.Node, RequestID: a.RequestID, Kind: latchkey.KindDetect,
			Action: latchkey.ActionLeakReported, Actor: createdBy(a), TokenID: id, Outcome: latchkey.OutcomeOK,
			Reason: res.Label, ClientIP: a.ClientIP, UserAgent: a.UserAgent, Detail: raw}
		if err := s.Store.AppendAudit(ctx, []latchkey.AuditEvent{ev}); err != nil {
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// judgeLeak says what a reported string is: "real" (a live token),
// "already_revoked", "secret_mismatch" (a real id with a wrong secret),
// "unknown" or "malformed"; id is the token id when it parsed.
func (s *Service) judgeLeak(ctx context.Context, tok string) (outcome, id string) {
	parts, err := secret.Parse(tok)
	if err != nil {
		return "malformed", ""
	}
	id = string([]byte(parts.ID)) // a copy: the report's memory holds the secret
	t, err := s.Store.GetToken(ctx, id)
	if err != nil {
		return "unknown", id
	}
	if !s.Hasher.Equal(parts.ID, &parts.Secret, t.Hash) || parts.Prefix != t.Prefix {
		return "secret_mismatch", id
	}
	if t.Status == latchkey.StatusRevoked {
		return "already_revoked", id
	}
	return "real", id
}

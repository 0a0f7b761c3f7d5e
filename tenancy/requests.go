package tenancy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// Limits on access requests.
const (
	MaxOpenRequests   = 1000 // pending or approved, across keyspaces
	MaxReasonLen      = 500
	DefaultRequestTTL = 24 * time.Hour
	DefaultClaimTTL   = time.Hour
	// ClaimPrefix begins every claim code ("lkclaim_" and 32 hex digits).
	ClaimPrefix = "lkclaim_"
)

// stored is a request as kept in its setting: with its claim code's hash.
type stored struct {
	latchkey.AccessRequest
	ClaimHash string `json:"claim_hash"`
}

func claimHash(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

// rulesFor works out how many approvals scopes need in policy p and the
// longest lifetime the token may have. A scope no rule covers cannot be
// requested.
func rulesFor(p *latchkey.KeyspacePolicy, scopes []string) (needed int, maxTTL time.Duration, err error) {
	for _, sc := range scopes {
		covered := false
		for _, r := range p.Requests {
			if latchkey.ScopesCover(r.Scopes, sc) {
				covered = true
				needed = max(needed, r.Approvals)
				if d := time.Duration(r.MaxTTL); maxTTL == 0 || d < maxTTL {
					maxTTL = d
				}
			}
		}
		if !covered {
			return 0, 0, latchkey.Errorf(latchkey.EInvalid, "scope %q cannot be requested in this keyspace: no approval rule covers it", sc)
		}
	}
	return needed, maxTTL, nil
}

// Request records a pending access request by a's token and returns it
// with its claim code, which exists nowhere else: the requester collects
// the token with it once approvers agree.
func (s *Service) Request(ctx context.Context, a latchkey.Actor, nr client.NewAccessRequest) (latchkey.AccessRequest, string, error) {
	var out latchkey.AccessRequest
	subject := a.Subject
	if a.TokenID == "" {
		return out, "", latchkey.Errorf(latchkey.EUnauthenticated, "an access request is made with the requester's own token")
	}
	if subject == "" {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "the requesting token has no subject: approvers must know who asks")
	}
	ks := nr.Keyspace
	if ks == "" {
		ks = latchkey.KeyspaceOf(a.Keyspace)
	}
	if k := latchkey.KeyspaceOf(a.Keyspace); k != latchkey.DefaultKeyspace && k != ks {
		return out, "", latchkey.Errorf(latchkey.EPermissionDenied, "a token of keyspace %s can only request access in it", k)
	}
	k, ok := s.Registry.Keyspace(ks)
	if !ok {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "there is no keyspace %q", ks)
	}
	if len(nr.Scopes) == 0 || len(nr.Scopes) > latchkey.MaxScopes {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "request 1 to %d scopes", latchkey.MaxScopes)
	}
	var scopes []string
	for _, sc := range nr.Scopes {
		if secret.LooksLikeToken(sc) {
			return out, "", latchkey.Errorf(latchkey.EInvalid, "scopes must not contain a token")
		}
		if err := latchkey.ValidateScope(sc); err != nil {
			return out, "", err
		}
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	needed, maxTTL, err := rulesFor(&k.Policy, scopes)
	if err != nil {
		return out, "", err
	}
	if nr.TTL == "" {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "ttl is required (e.g. \"1h\"); at most %s here", latchkey.Duration(maxTTL))
	}
	ttl, err := latchkey.ParseDuration(nr.TTL)
	if err != nil || ttl <= 0 {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "ttl must be a positive duration such as \"1h\"")
	}
	ttl = min(ttl, maxTTL) // capped by the policy
	if strings.TrimSpace(nr.Reason) == "" {
		return out, "", latchkey.Errorf(latchkey.EInvalid, "reason is required: approvers need to know why")
	}
	if err := plain("reason", nr.Reason, MaxReasonLen); err != nil {
		return out, "", err
	}
	now := s.now()
	open, err := s.openRequests(ctx, now)
	if err != nil {
		return out, "", err
	}
	if open >= MaxOpenRequests {
		return out, "", latchkey.Errorf(latchkey.EResourceExhausted, "too many open access requests; try again once some are decided")
	}
	id, err := secret.NewID(s.rand())
	if err != nil {
		return out, "", err
	}
	raw := make([]byte, 16)
	if _, err := s.rand().Read(raw); err != nil {
		return out, "", fmt.Errorf("tenancy: claim code: %w", err)
	}
	code := ClaimPrefix + hex.EncodeToString(raw)
	reqTTL := time.Duration(k.Policy.RequestTTL)
	if reqTTL == 0 {
		reqTTL = DefaultRequestTTL
	}
	st := stored{AccessRequest: latchkey.AccessRequest{
		ID: id, Keyspace: ks, Scopes: scopes, TTL: latchkey.Duration(ttl), Reason: nr.Reason,
		Requester: subject, RequestBy: a.TokenID, Status: latchkey.RequestPending, Needed: needed,
		Approvals: []latchkey.Verdict{}, CreatedAt: now, ExpiresAt: now.Add(reqTTL),
	}, ClaimHash: claimHash(code)}
	err = s.Store.ChangeSetting(ctx, requestKey(id), func(_ string, exists bool) (string, bool, *latchkey.AuditEvent, error) {
		if exists {
			return "", false, nil, latchkey.Errorf(latchkey.EConflict, "request id collision; retry")
		}
		b, _ := json.Marshal(st)
		ev := s.event(a, latchkey.ActionAccessRequest, ks, now, requestDetail(&st.AccessRequest, nil))
		return string(b), false, ev, nil
	})
	if err != nil {
		return out, "", err
	}
	return st.AccessRequest, code, nil
}

func requestDetail(r *latchkey.AccessRequest, extra map[string]any) map[string]any {
	d := map[string]any{"request_id": r.ID, "keyspace": r.Keyspace, "scopes": r.Scopes, "ttl": r.TTL,
		"requester": r.Requester, "requested_by": r.RequestBy, "reason": r.Reason,
		"approvals": len(r.Approvals), "approvals_required": r.Needed, "status": r.Status}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

// openRequests counts the pending and approved requests at now.
func (s *Service) openRequests(ctx context.Context, now time.Time) (int, error) {
	all, err := s.requests(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range all {
		if st := r.StateAt(now); st == latchkey.RequestPending || st == latchkey.RequestApproved {
			n++
		}
	}
	return n, nil
}

func (s *Service) requests(ctx context.Context) ([]stored, error) {
	all, err := s.Store.SettingsWithPrefix(ctx, requestPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]stored, 0, len(all))
	for _, v := range all {
		var st stored
		if err := json.Unmarshal([]byte(v), &st); err != nil {
			continue // not ours to judge; never shown
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b stored) int { return b.CreatedAt.Compare(a.CreatedAt) })
	return out, nil
}

// Requests lists the requests visible says the caller may see, newest
// first, with their state at now (status "" for all).
func (s *Service) Requests(ctx context.Context, visible func(*latchkey.AccessRequest) bool, status string) ([]latchkey.AccessRequest, error) {
	all, err := s.requests(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := []latchkey.AccessRequest{}
	for _, st := range all {
		r := st.AccessRequest
		r.Status = r.StateAt(now)
		if visible(&r) && (status == "" || r.Status == status) {
			out = append(out, r)
		}
	}
	return out, nil
}

// GetRequest returns one request with its state at now.
func (s *Service) GetRequest(ctx context.Context, id string) (latchkey.AccessRequest, error) {
	v, ok, err := s.Store.GetSetting(ctx, requestKey(id))
	if err != nil {
		return latchkey.AccessRequest{}, err
	}
	var st stored
	if !ok || json.Unmarshal([]byte(v), &st) != nil {
		return latchkey.AccessRequest{}, latchkey.Errorf(latchkey.ENotFound, "no access request %s", id)
	}
	r := st.AccessRequest
	r.Status = r.StateAt(s.now())
	return r, nil
}

// decide changes request id in one transaction: fn sees it (with its
// state at now) and changes it, or refuses.
func (s *Service) decide(ctx context.Context, id string, fn func(st *stored, now time.Time) (*latchkey.AuditEvent, error)) (latchkey.AccessRequest, error) {
	now := s.now()
	var out latchkey.AccessRequest
	err := s.Store.ChangeSetting(ctx, requestKey(id), func(old string, ok bool) (string, bool, *latchkey.AuditEvent, error) {
		var st stored
		if !ok || json.Unmarshal([]byte(old), &st) != nil {
			return "", false, nil, latchkey.Errorf(latchkey.ENotFound, "no access request %s", id)
		}
		ev, err := fn(&st, now)
		if err != nil {
			return "", false, nil, err
		}
		b, _ := json.Marshal(st)
		out = st.AccessRequest
		return string(b), false, ev, nil
	})
	return out, err
}

// mayDecide checks that a may approve or deny r: it holds the approve
// permission in r's keyspace and is not the requester.
func mayDecide(a latchkey.Actor, r *latchkey.AccessRequest, now time.Time) error {
	subject := a.Subject
	if !a.Reach(latchkey.PermApprove).Has(r.Keyspace) {
		return latchkey.Errorf(latchkey.ENotFound, "no access request %s", r.ID)
	}
	if a.TokenID == r.RequestBy || subject == r.Requester {
		return latchkey.Errorf(latchkey.EPermissionDenied, "you cannot decide on your own access request")
	}
	if subject == "" {
		return latchkey.Errorf(latchkey.EPermissionDenied, "an approver's token must name its subject")
	}
	switch r.StateAt(now) {
	case latchkey.RequestPending:
		return nil
	case latchkey.RequestExpired:
		return latchkey.Errorf(latchkey.EConflict, "access request %s has expired", r.ID)
	}
	return latchkey.Errorf(latchkey.EConflict, "access request %s is already %s", r.ID, r.Status)
}

// verdict runs one approver's decision on request id: the comment is
// checked, then decide changes the request once mayDecide admits a.
func (s *Service) verdict(ctx context.Context, a latchkey.Actor, id, comment, action string, decide func(r *latchkey.AccessRequest, v latchkey.Verdict)) (latchkey.AccessRequest, error) {
	if err := plain("comment", comment, MaxReasonLen); err != nil {
		return latchkey.AccessRequest{}, err
	}
	return s.decide(ctx, id, func(st *stored, now time.Time) (*latchkey.AuditEvent, error) {
		r := &st.AccessRequest
		if err := mayDecide(a, r, now); err != nil {
			return nil, err
		}
		for _, v := range r.Approvals {
			if v.Subject == a.Subject {
				return nil, latchkey.Errorf(latchkey.EConflict, "%s has already approved request %s; another approver must", a.Subject, r.ID)
			}
		}
		decide(r, latchkey.Verdict{By: a.TokenID, Subject: a.Subject, At: now, Comment: comment})
		return s.event(a, action, r.Keyspace, now, requestDetail(r, map[string]any{"approver": a.Subject, "comment": comment})), nil
	})
}

// Approve adds a's approval to request id; with enough distinct
// approvers the request is approved and can be claimed until its claim
// window ends.
func (s *Service) Approve(ctx context.Context, a latchkey.Actor, id, comment string) (latchkey.AccessRequest, error) {
	return s.verdict(ctx, a, id, comment, latchkey.ActionAccessApprove, func(r *latchkey.AccessRequest, v latchkey.Verdict) {
		r.Approvals = append(r.Approvals, v)
		if len(r.Approvals) < r.Needed {
			return
		}
		r.Status = latchkey.RequestApproved
		k, _ := s.Registry.Keyspace(r.Keyspace)
		claim := time.Duration(k.Policy.ClaimTTL)
		if claim == 0 {
			claim = DefaultClaimTTL
		}
		r.ClaimBy = v.At.Add(claim)
	})
}

// Deny refuses request id: one denial ends it.
func (s *Service) Deny(ctx context.Context, a latchkey.Actor, id, comment string) (latchkey.AccessRequest, error) {
	return s.verdict(ctx, a, id, comment, latchkey.ActionAccessDeny, func(r *latchkey.AccessRequest, v latchkey.Verdict) {
		r.Status = latchkey.RequestDenied
		r.Denial = &v
	})
}

// Claim issues the token of approved request id to whoever holds its
// claim code, once. a describes the caller for the audit record.
func (s *Service) Claim(ctx context.Context, a latchkey.Actor, id, code string) (*latchkey.Token, secret.Plaintext, error) {
	if s.Tokens == nil {
		return nil, secret.Plaintext{}, latchkey.Errorf(latchkey.EUnavailable, "claims are not served here")
	}
	refuse := func(r *latchkey.AccessRequest, now time.Time, why string, err error) error {
		// A refused claim is recorded too (a stolen or replayed code).
		ev := s.event(a, latchkey.ActionAccessClaim, r.Keyspace, now, requestDetail(r, map[string]any{"refused": why}))
		ev.Outcome, ev.Reason = latchkey.OutcomeRefused, why
		if aerr := s.Store.AppendAudit(ctx, []latchkey.AuditEvent{*ev}); aerr != nil {
			return aerr
		}
		return err
	}
	// First claim the request (the code checked, the state approved), so
	// that two claims with the code cannot both issue a token; then issue.
	var claimed latchkey.AccessRequest
	var refusal func() error
	_, err := s.decide(ctx, id, func(st *stored, now time.Time) (*latchkey.AuditEvent, error) {
		r := &st.AccessRequest
		if subtle.ConstantTimeCompare([]byte(claimHash(code)), []byte(st.ClaimHash)) != 1 {
			cp := *r
			refusal = func() error {
				return refuse(&cp, now, "wrong_claim_code", latchkey.Errorf(latchkey.EPermissionDenied, "wrong claim code for access request %s", id))
			}
			return nil, errRefused
		}
		switch state := r.StateAt(now); state {
		case latchkey.RequestApproved:
		default:
			cp := *r
			msg := map[string]string{
				latchkey.RequestExpired: "has expired", latchkey.RequestClaimed: "was already claimed",
				latchkey.RequestPending: "is not approved yet", latchkey.RequestDenied: "was denied",
			}[state]
			refusal = func() error {
				return refuse(&cp, now, "request_"+state, latchkey.Errorf(latchkey.EConflict, "access request %s %s", id, msg))
			}
			return nil, errRefused
		}
		r.Status = latchkey.RequestClaimed
		claimed = *r
		return nil, nil // the claim's record is written with the token
	})
	if err == errRefused {
		return nil, secret.Plaintext{}, refusal()
	}
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	meta, _ := json.Marshal(map[string]string{"access_request": claimed.ID})
	t, pt, err := s.Tokens.Create(ctx, latchkey.Actor{System: "access-request", ClientIP: a.ClientIP, UserAgent: a.UserAgent, RequestID: a.RequestID},
		client.CreateRequest{
			Name: "access request " + claimed.ID, Subject: claimed.Requester, Scopes: claimed.Scopes, Keyspace: claimed.Keyspace,
			TTL: claimed.TTL.String(), Tags: []string{"access-request"}, Meta: meta,
		})
	if err != nil {
		// Put the request back, so the requester can try again.
		_, _ = s.decide(ctx, id, func(st *stored, now time.Time) (*latchkey.AuditEvent, error) {
			st.Status = latchkey.RequestApproved
			return nil, nil
		})
		return nil, secret.Plaintext{}, err
	}
	_, err = s.decide(ctx, id, func(st *stored, now time.Time) (*latchkey.AuditEvent, error) {
		st.TokenID = t.ID
		ev := s.event(a, latchkey.ActionAccessClaim, st.Keyspace, now, requestDetail(&st.AccessRequest, map[string]any{"token_id": t.ID}))
		ev.TokenID = t.ID
		return ev, nil
	})
	if err != nil {
		return nil, secret.Plaintext{}, err
	}
	return t, pt, nil
}

var errRefused = latchkey.Errorf(latchkey.EPermissionDenied, "refused")

// Prune deletes requests decided or expired more than a day ago.
func (s *Service) Prune(ctx context.Context, del func(ctx context.Context, key string) error) error {
	all, err := s.requests(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	for _, st := range all {
		end := st.ExpiresAt
		if !st.ClaimBy.IsZero() {
			end = st.ClaimBy
		}
		if st.StateAt(now) != latchkey.RequestPending && now.Sub(end) > 24*time.Hour && now.Sub(st.CreatedAt) > 24*time.Hour {
			if err := del(ctx, requestKey(st.ID)); err != nil {
				return err
			}
		}
	}
	return nil
}

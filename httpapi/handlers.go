package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/secret"
	"github.com/latchkeyhq/latchkey/tokens"
)

// CreatedToken is the response to POST /v1/tokens: the record plus the
// plaintext, which is shown this once and never again.
type CreatedToken struct {
	Plaintext string `json:"token"`
	*latchkey.Token
}

// TokenList is the response to GET /v1/tokens.
type TokenList struct {
	Tokens     []*latchkey.Token `json:"tokens"`
	NextCursor string            `json:"next_cursor,omitempty"`
}

// AuditList is the response to GET /v1/audit.
type AuditList struct {
	Events     []latchkey.AuditEvent `json:"events"`
	NextCursor string                `json:"next_cursor,omitempty"`
}

// RevokeRequest is the body of POST /v1/tokens/{id}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason"`
}

// VerifyRequest is the body of POST /v1/verify.
type VerifyRequest struct {
	Token  string   `json:"token"`
	Scopes []string `json:"scopes,omitempty"`
	// IP is the end client's address, as seen by the calling backend.
	IP     string `json:"ip,omitempty"`
	Method string `json:"method,omitempty"`
	Path   string `json:"path,omitempty"`
}

// VerifyResponse is the answer of POST /v1/verify. A refused token is a
// 200 with valid=false and a code; only the token's public facts are
// returned, and only when it is valid (rate_limit also when RATE_LIMITED).
type VerifyResponse struct {
	Valid     bool            `json:"valid"`
	Code      latchkey.Code   `json:"code"`
	TokenID   string          `json:"token_id,omitempty"`
	Subject   string          `json:"subject,omitempty"`
	Scopes    []string        `json:"scopes,omitempty"`
	ExpiresAt *time.Time      `json:"expires_at,omitempty"`
	Meta      json.RawMessage `json:"meta,omitempty"`
	// Remaining is the number of uses left, for a usage-limited token.
	Remaining *int64 `json:"remaining,omitempty"`
	// RateLimit is the token's rate limit after this verification.
	RateLimit *RateLimitStatus `json:"rate_limit,omitempty"`
	// Warnings: "rotation_due" when the token is older than the rotation
	// policy allows.
	Warnings []string `json:"warnings,omitempty"`
}

// RateLimitStatus reports a token's rate limit.
type RateLimitStatus struct {
	Limit     int64 `json:"limit"`
	Remaining int64 `json:"remaining"`
	// Reset is when the full limit is available again.
	Reset time.Time `json:"reset"`
	// RetryAfter, when RATE_LIMITED, is the number of seconds (rounded
	// up) until one more verification is allowed.
	RetryAfter int64 `json:"retry_after,omitempty"`
}

// RotateRequest is the body of POST /v1/tokens/{id}/rotate.
type RotateRequest struct {
	// Grace is how long the old token keeps working, e.g. "24h" (default
	// 0: it stops at once). It never outlives its own expiry.
	Grace string `json:"grace,omitempty"`
}

// RotatedToken is the answer to a rotation: the successor with its
// plaintext (shown this once), and the old token as it now stands.
type RotatedToken struct {
	CreatedToken
	Predecessor *latchkey.Token `json:"predecessor"`
}

// RevocationRequest is the body of POST /v1/revocations: exactly one of
// subject, tag, prefix or parent.
type RevocationRequest struct {
	Subject string `json:"subject,omitempty"`
	Tag     string `json:"tag,omitempty"`
	Prefix  string `json:"prefix,omitempty"`
	// Parent revokes every token derived from it (not the parent itself).
	Parent string `json:"parent,omitempty"`
	Reason string `json:"reason,omitempty"`
	// IncludeSelf revokes the caller's own token too when it matches; by
	// default it (and the ancestors whose revocation would revoke it) is
	// spared.
	IncludeSelf bool `json:"include_self,omitempty"`
	// DryRun changes nothing and answers what would be revoked.
	DryRun bool `json:"dry_run,omitempty"`
}

// RevocationResult is the answer of POST /v1/revocations: how many tokens
// were revoked (or would be, dry run), and the matching tokens spared
// because they are the caller's own.
type RevocationResult = tokens.BulkResult

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req tokens.CreateRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	t, pt, err := s.Tokens.Create(r.Context(), a, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, CreatedToken{Plaintext: pt.Reveal(), Token: t})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, "subject", "status", "tag", "prefix", "parent", "rotation_due", "cursor", "limit"); err != nil {
		return err
	}
	limit, err := limitParam(q)
	if err != nil {
		return err
	}
	f := latchkey.TokenFilter{
		Subject: q.Get("subject"), Status: latchkey.Status(q.Get("status")), Tag: q.Get("tag"),
		Prefix: q.Get("prefix"), ParentID: q.Get("parent"), Cursor: q.Get("cursor"), Limit: limit,
	}
	switch q.Get("rotation_due") {
	case "", "false":
	case "true":
		f.RotationDue = true
	default:
		return latchkey.Errorf(latchkey.EInvalid, "rotation_due must be true or false")
	}
	page, err := s.Tokens.List(r.Context(), f)
	if err != nil {
		return err
	}
	if page.Tokens == nil {
		page.Tokens = []*latchkey.Token{}
	}
	writeJSON(w, http.StatusOK, TokenList{Tokens: page.Tokens, NextCursor: page.Next})
	return nil
}

func validID(id string) error {
	if len(id) != secret.IDLen {
		return latchkey.Errorf(latchkey.ENotFound, "token not found")
	}
	return nil
}

func (s *Server) getToken(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	id := r.PathValue("id")
	if err := validID(id); err != nil {
		return err
	}
	t, err := s.Tokens.Get(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[RevokeRequest](w, r, false)
	if err != nil {
		return err
	}
	t, err := s.Tokens.Revoke(r.Context(), a, id, req.Reason)
	return replyToken(w, t, err)
}

// optionalBody decodes a body that may be absent.
func optionalBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(w, r, v)
}

// tokenRequest reads the {id} of the path and the JSON body into a T. An
// absent body is allowed unless required.
func tokenRequest[T any](w http.ResponseWriter, r *http.Request, required bool) (id string, req T, err error) {
	id = r.PathValue("id")
	if required {
		err = decode(w, r, &req)
	} else {
		err = optionalBody(w, r, &req)
	}
	if err == nil {
		err = validID(id)
	}
	return id, req, err
}

// replyToken answers with the token a change left behind.
func replyToken(w http.ResponseWriter, t *latchkey.Token, err error) error {
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, t)
	return nil
}

func (s *Server) updateToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[tokens.UpdateRequest](w, r, true)
	if err != nil {
		return err
	}
	t, err := s.Tokens.Update(r.Context(), a, id, req)
	return replyToken(w, t, err)
}

func (s *Server) suspendToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[RevokeRequest](w, r, false)
	if err != nil {
		return err
	}
	t, err := s.Tokens.Suspend(r.Context(), a, id, req.Reason)
	return replyToken(w, t, err)
}

func (s *Server) resumeToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, _, err := tokenRequest[struct{}](w, r, false)
	if err != nil {
		return err
	}
	t, err := s.Tokens.Resume(r.Context(), a, id)
	return replyToken(w, t, err)
}

func (s *Server) rotateToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[RotateRequest](w, r, false)
	if err != nil {
		return err
	}
	var grace time.Duration
	if req.Grace != "" {
		if grace, err = latchkey.ParseDuration(req.Grace); err != nil {
			return latchkey.Errorf(latchkey.EInvalid, "grace: %s", latchkey.ErrorMessage(err))
		}
	}
	res, err := s.Tokens.Rotate(r.Context(), a, id, grace)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+res.Successor.ID)
	writeJSON(w, http.StatusCreated, RotatedToken{
		CreatedToken: CreatedToken{Plaintext: res.Plaintext.Reveal(), Token: res.Successor},
		Predecessor:  res.Old,
	})
	return nil
}

func (s *Server) deriveToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[tokens.CreateRequest](w, r, false)
	if err != nil {
		return err
	}
	t, pt, err := s.Tokens.Derive(r.Context(), a, id, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, CreatedToken{Plaintext: pt.Reveal(), Token: t})
	return nil
}

func (s *Server) revocations(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req RevocationRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	res, err := s.Tokens.RevokeMatching(r.Context(), a, latchkey.TokenSelector{
		Subject: req.Subject, Tag: req.Tag, Prefix: req.Prefix, Parent: req.Parent}, req.Reason,
		tokens.BulkOptions{IncludeSelf: req.IncludeSelf, DryRun: req.DryRun})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req VerifyRequest
	if err := decodeVerify(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return latchkey.Errorf(latchkey.EInvalid, "token is required")
	}
	if len(req.Scopes) > latchkey.MaxScopes {
		return latchkey.Errorf(latchkey.EInvalid, "at most %d scopes may be required", latchkey.MaxScopes)
	}
	for _, sc := range req.Scopes {
		if err := latchkey.ValidateScope(sc); err != nil {
			return err
		}
		if secret.LooksLikeToken(sc) {
			return latchkey.Errorf(latchkey.EInvalid, "scopes must not contain a token")
		}
	}
	if secret.LooksLikeToken(req.Path) || secret.LooksLikeToken(req.Method) {
		return latchkey.Errorf(latchkey.EInvalid, "method and path must not contain a token")
	}
	// The caller is a backend. The end client is who it says (ip), or who
	// a trusted proxy in front of us says (X-Forwarded-For). Otherwise the
	// connection's address is the backend's own: it is checked against
	// allowlists but never blocked, since it relays everyone's requests.
	ip, src, forwarded := s.clientAddr(r)
	if !forwarded {
		src = netip.Addr{}
	}
	if req.IP != "" {
		addr, err := netip.ParseAddr(req.IP)
		if err != nil {
			return latchkey.Errorf(latchkey.EInvalid, "ip is not an IP address")
		}
		src = addr.Unmap()
		ip = src.String()
	}
	if len(req.Method) > 16 || len(req.Path) > 2048 {
		return latchkey.Errorf(latchkey.EInvalid, "method or path is too long")
	}
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{
		Token: req.Token, Scopes: req.Scopes, ClientIP: ip, UserAgent: a.UserAgent,
		Method: req.Method, Path: req.Path, RequestID: a.RequestID, Source: src,
	})
	if err != nil {
		return latchkey.Errorf(latchkey.EUnavailable, "cannot verify right now")
	}
	resp := VerifyResponse{Valid: d.Valid(), Code: d.Code}
	if d.Rate.Limit > 0 && (d.Valid() || d.Code == latchkey.RateLimited) {
		resp.RateLimit = &RateLimitStatus{Limit: d.Rate.Limit, Remaining: d.Rate.Remaining, Reset: time.Unix(0, d.Rate.Reset).UTC()}
		if d.Code == latchkey.RateLimited {
			resp.RateLimit.RetryAfter, _ = strconv.ParseInt(retryAfterSeconds(d.Rate.RetryAfter), 10, 64)
		}
	}
	if d.Valid() {
		resp.TokenID, resp.Subject, resp.Scopes, resp.Meta = d.TokenID, d.Subject, d.Scopes, d.Meta
		if !d.ExpiresAt.IsZero() {
			resp.ExpiresAt = &d.ExpiresAt
		}
		if d.Remaining >= 0 {
			resp.Remaining = &d.Remaining
		}
		resp.Warnings = d.Warnings.Strings()
	} else if d.Code != latchkey.Malformed && d.Code != latchkey.NotFound {
		// Real but refused: the id helps the caller's logs; nothing else.
		resp.TokenID = d.TokenID
	}
	writeVerify(w, &resp)
	return nil
}

// auditFilter reads the filters GET /v1/audit and its stream share:
// token_id, subject, outcome, kind, action, node, since, until.
func auditFilter(q url.Values) (latchkey.AuditFilter, error) {
	f := latchkey.AuditFilter{TokenID: q.Get("token_id"), Subject: q.Get("subject"), Outcome: q.Get("outcome"),
		Kind: q.Get("kind"), Node: q.Get("node"), Action: q.Get("action")}
	if o := f.Outcome; o != "" && o != latchkey.OutcomeOK && o != "ERROR" {
		if _, ok := latchkey.ParseCode(o); !ok {
			return f, latchkey.Errorf(latchkey.EInvalid, "outcome %q is not a known code (e.g. VALID, NOT_FOUND, REVOKED, OK)", o)
		}
	}
	if k := f.Kind; k != "" && k != latchkey.KindVerify && k != latchkey.KindAdmin && k != latchkey.KindDetect {
		return f, latchkey.Errorf(latchkey.EInvalid, "kind must be verify, admin or detect")
	}
	var err error
	if f.Since, err = timeParam(q, "since"); err != nil {
		return f, err
	}
	if f.Until, err = timeParam(q, "until"); err != nil {
		return f, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return f, latchkey.Errorf(latchkey.EInvalid, "since must be earlier than until")
	}
	return f, nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, _ latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, "token_id", "subject", "outcome", "kind", "action", "node", "since", "until", "after", "cursor", "limit"); err != nil {
		return err
	}
	f, err := auditFilter(q)
	if err != nil {
		return err
	}
	f.Cursor = q.Get("cursor")
	if v := q.Get("after"); v != "" {
		if f.After, err = strconv.ParseInt(v, 10, 64); err != nil || f.After < 0 {
			return latchkey.Errorf(latchkey.EInvalid, "after must be a sequence number")
		}
		f.Ascending = true // after=0: from the start, oldest first
		if f.Cursor != "" {
			return latchkey.Errorf(latchkey.EInvalid, "give after or cursor, not both")
		}
	}
	if f.Limit, err = limitParam(q); err != nil {
		return err
	}
	if s.FlushAudit != nil {
		fctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := s.FlushAudit(fctx)
		cancel()
		if err != nil && r.Context().Err() != nil {
			return r.Context().Err()
		}
	}
	page, err := s.Audit.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	if page.Events == nil {
		page.Events = []latchkey.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, AuditList{Events: page.Events, NextCursor: page.Next})
	return nil
}

// onlyParams refuses query parameters the endpoint does not know, so a
// typo ("subjet=") is an error rather than a silently unfiltered answer.
func onlyParams(q url.Values, known ...string) error {
	for k := range q {
		ok := false
		for _, n := range known {
			ok = ok || k == n
		}
		if !ok {
			return latchkey.Errorf(latchkey.EInvalid, "unknown query parameter %q", k)
		}
	}
	return nil
}

func limitParam(q url.Values) (int, error) {
	v := q.Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > latchkey.MaxPageLimit {
		return 0, latchkey.Errorf(latchkey.EInvalid, "limit must be between 1 and %d", latchkey.MaxPageLimit)
	}
	return n, nil
}

func timeParam(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, latchkey.Errorf(latchkey.EInvalid, "%s must be an RFC 3339 time, e.g. 2026-11-29T08:00:00Z", name)
	}
	return t, nil
}

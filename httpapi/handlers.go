package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/edge"
	"github.com/latchkeyhq/latchkey/secret"
)

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req client.CreateRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ks, err := callKeyspace(a, latchkey.PermTokensWrite, req.Keyspace)
	if err != nil {
		return err
	}
	req.Keyspace = ks
	t, pt, err := s.Tokens.Create(r.Context(), a, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, client.CreatedToken{Plaintext: pt.Reveal(), Token: t})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	q := r.URL.Query()
	if err := onlyParams(q, append(tokenParams, "cursor", "limit", "count")...); err != nil {
		return err
	}
	f, err := tokenFilter(q, a)
	if err != nil {
		return err
	}
	if f.Limit, err = limitParam(q); err != nil {
		return err
	}
	f.Cursor = q.Get("cursor")
	if f.Count, err = boolParam(q, "count"); err != nil {
		return err
	}
	page, err := s.Tokens.List(r.Context(), f)
	if err != nil {
		return err
	}
	if page.Tokens == nil {
		page.Tokens = []*latchkey.Token{}
	}
	list := client.TokenList{Tokens: page.Tokens, NextCursor: page.Next}
	if f.Count {
		list.Total = &page.Total
	}
	writeJSON(w, http.StatusOK, list)
	return nil
}

// tokenParams are the filters and the order of GET /v1/tokens and its
// export.
var tokenParams = []string{"keyspace", "subject", "status", "tag", "prefix", "parent", "rotation_due",
	"q", "expires_within", "unused_for", "never_used", "sort", "order"}

// tokenFilter reads the filters of GET /v1/tokens (and its export).
func tokenFilter(q url.Values, a latchkey.Actor) (latchkey.TokenFilter, error) {
	ks, err := callKeyspace(a, latchkey.PermTokensRead, q.Get("keyspace"))
	if err != nil {
		return latchkey.TokenFilter{}, err
	}
	f := latchkey.TokenFilter{
		Keyspace: ks, Subject: q.Get("subject"), Status: latchkey.Status(q.Get("status")), Tag: q.Get("tag"),
		Prefix: q.Get("prefix"), ParentID: q.Get("parent"),
	}
	f.Search, f.Sort, f.Order = q.Get("q"), q.Get("sort"), q.Get("order")
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"rotation_due", &f.RotationDue}, {"never_used", &f.NeverUsed}} {
		if *b.dst, err = boolParam(q, b.name); err != nil {
			return f, err
		}
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"expires_within", &f.ExpiresWithin}, {"unused_for", &f.UnusedFor}} {
		v := q.Get(d.name)
		if v == "" {
			continue
		}
		if *d.dst, err = latchkey.ParseDuration(v); err != nil || *d.dst <= 0 {
			return f, latchkey.Errorf(latchkey.EInvalid, "%s must be a positive duration such as 7d or 12h", d.name)
		}
	}
	return f, nil // the order and the search are checked by the store's listing (tokenrow.NewListing)
}

// boolParam reads a query parameter that is true, false or absent.
func boolParam(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, latchkey.Errorf(latchkey.EInvalid, "%s must be true or false", name)
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
	id, req, err := tokenRequest[client.RevokeRequest](w, r, false)
	if err != nil {
		return err
	}
	wait, waiting, err := receiptWait(r.URL.Query())
	if err != nil {
		return err
	}
	t, err := s.Tokens.Revoke(r.Context(), a, id, req.Reason)
	return s.replyChanged(w, r, t, err, waiting, wait, latchkey.ActionTokenRevoke)
}

// replyChanged answers with the token a revocation or suspension left
// behind, with its receipt when one was asked for.
func (s *Server) replyChanged(w http.ResponseWriter, r *http.Request, t *latchkey.Token, err error, waiting bool, wait time.Duration, action string) error {
	if err != nil || !waiting {
		return replyToken(w, t, err)
	}
	rc, err := s.receipt(r.Context(), wait, action, t.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, withReceipt{Token: t, Receipt: rc})
	return nil
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
	id, req, err := tokenRequest[client.UpdateRequest](w, r, true)
	if err != nil {
		return err
	}
	t, err := s.Tokens.Update(r.Context(), a, id, req)
	return replyToken(w, t, err)
}

func (s *Server) suspendToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[client.RevokeRequest](w, r, false)
	if err != nil {
		return err
	}
	wait, waiting, err := receiptWait(r.URL.Query())
	if err != nil {
		return err
	}
	t, err := s.Tokens.Suspend(r.Context(), a, id, req.Reason)
	return s.replyChanged(w, r, t, err, waiting, wait, latchkey.ActionTokenSuspend)
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
	id, req, err := tokenRequest[client.RotateRequest](w, r, false)
	if err != nil {
		return err
	}
	var grace time.Duration
	if req.Grace != "" {
		if grace, err = latchkey.ParseDuration(req.Grace); err != nil {
			return latchkey.Errorf(latchkey.EInvalid, "grace: %s", latchkey.ErrorMessage(err))
		}
	}
	succ, pt, old, err := s.Tokens.Rotate(r.Context(), a, id, grace)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+succ.ID)
	writeJSON(w, http.StatusCreated, client.RotatedToken{
		CreatedToken: client.CreatedToken{Plaintext: pt.Reveal(), Token: succ},
		Predecessor:  old,
	})
	return nil
}

func (s *Server) deriveToken(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	id, req, err := tokenRequest[client.CreateRequest](w, r, false)
	if err != nil {
		return err
	}
	t, pt, err := s.Tokens.Derive(r.Context(), a, id, req)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/tokens/"+t.ID)
	writeJSON(w, http.StatusCreated, client.CreatedToken{Plaintext: pt.Reveal(), Token: t})
	return nil
}

func (s *Server) revocations(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req client.RevocationRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	wait, waiting, err := receiptWait(r.URL.Query())
	if err != nil {
		return err
	}
	ks, err := callKeyspace(a, latchkey.PermTokensWrite, req.Keyspace)
	if err != nil {
		return err
	}
	res, err := s.Tokens.RevokeMatching(r.Context(), a, latchkey.TokenSelector{Keyspace: ks,
		Subject: req.Subject, Tag: req.Tag, Prefix: req.Prefix, Parent: req.Parent}, req.Reason,
		latchkey.BulkOptions{IncludeSelf: req.IncludeSelf, DryRun: req.DryRun})
	if err != nil {
		return err
	}
	if waiting && !req.DryRun {
		rc, err := s.receipt(r.Context(), wait, latchkey.ActionTokenRevoke, "")
		if err != nil {
			return err
		}
		res.Receipt = &rc
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *Server) verify(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var req client.VerifyRequest
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
	ca := s.clientAddr(r)
	ip, src := ca.IP, ca.Source
	if !ca.Forwarded {
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
	if req.Resource != "" {
		if err := latchkey.ValidateResource(req.Resource); err != nil {
			return err
		}
	}
	ks, err := callKeyspace(a, latchkey.PermVerify, req.Keyspace)
	if err != nil {
		return err
	}
	d, err := s.Verifier.Verify(r.Context(), &latchkey.VerifyRequest{
		Token: req.Token, Scopes: req.Scopes, ClientIP: ip, UserAgent: a.UserAgent,
		Method: req.Method, Path: req.Path, Resource: req.Resource, RequestID: a.RequestID, Source: src, Keyspace: ks,
	})
	if err != nil {
		return latchkey.Errorf(latchkey.EUnavailable, "cannot verify right now")
	}
	resp := client.VerifyResponse{Valid: d.Valid(), Code: d.Code}
	if d.Rate.Limit > 0 && (d.Valid() || d.Code == latchkey.RateLimited) {
		resp.RateLimit = &client.RateLimitStatus{Limit: d.Rate.Limit, Remaining: d.Rate.Remaining, Reset: time.Unix(0, d.Rate.Reset).UTC()}
		if d.Code == latchkey.RateLimited {
			resp.RateLimit.RetryAfter = edge.RetryAfter(d.Rate.RetryAfter)
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
func auditFilter(q url.Values, a latchkey.Actor) (latchkey.AuditFilter, error) {
	f := latchkey.AuditFilter{TokenID: q.Get("token_id"), Subject: q.Get("subject"), Outcome: q.Get("outcome"),
		Kind: q.Get("kind"), Node: q.Get("node"), Action: q.Get("action")}
	ks, err := callKeyspace(a, latchkey.PermAuditRead, q.Get("keyspace"))
	if err != nil {
		return f, err
	}
	f.Keyspace = ks
	if v := q.Get("client_ip"); v != "" {
		if f.Source, err = latchkey.ParseSource(v); err != nil {
			return f, err
		}
	}
	if o := f.Outcome; o != "" && o != latchkey.OutcomeOK && o != "ERROR" {
		if _, ok := latchkey.ParseCode(o); !ok {
			return f, latchkey.Errorf(latchkey.EInvalid, "outcome %q is not a known code (e.g. VALID, NOT_FOUND, REVOKED, OK)", o)
		}
	}
	if k := f.Kind; k != "" && k != latchkey.KindVerify && k != latchkey.KindAdmin && k != latchkey.KindDetect && k != latchkey.KindSession {
		return f, latchkey.Errorf(latchkey.EInvalid, "kind must be verify, admin, detect or session")
	}
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

// auditParams are the filters GET /v1/audit, its sources and its export
// take.
var auditParams = []string{"keyspace", "token_id", "subject", "outcome", "kind", "action", "node", "client_ip", "since", "until"}

// auditRequest reads the audit filters of r and any of extra, refusing
// other parameters, and has the records of attempts made before r
// written (read your writes).
func (s *Server) auditRequest(r *http.Request, a latchkey.Actor, extra ...string) (latchkey.AuditFilter, url.Values, error) {
	q := r.URL.Query()
	if err := onlyParams(q, append(auditParams[:len(auditParams):len(auditParams)], extra...)...); err != nil {
		return latchkey.AuditFilter{}, q, err
	}
	f, err := auditFilter(q, a)
	if err != nil {
		return f, q, err
	}
	return f, q, s.flushAudit(r)
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	f, q, err := s.auditRequest(r, a, "after", "cursor", "limit")
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
	page, err := s.Audit.ListAudit(r.Context(), f)
	if err != nil {
		return err
	}
	if page.Events == nil {
		page.Events = []latchkey.AuditEvent{}
	}
	writeJSON(w, http.StatusOK, client.AuditList{Events: page.Events, NextCursor: page.Next})
	return nil
}

// flushAudit has the records of attempts made before r written, so that
// a reader sees them (read your writes).
func (s *Server) flushAudit(r *http.Request) error {
	if s.FlushAudit == nil {
		return nil
	}
	fctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	err := s.FlushAudit(fctx)
	cancel()
	if err != nil && r.Context().Err() != nil {
		return r.Context().Err()
	}
	return nil
}

// auditSources answers GET /v1/audit/sources: the records matching the
// same filters as GET /v1/audit, tallied by client address in the store
// (who used a token from where, and how it went).
func (s *Server) auditSources(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	f, _, err := s.auditRequest(r, a)
	if err != nil {
		return err
	}
	rep, err := s.Audit.AuditSources(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
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

package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Client calls the latchkey API. BaseURL is required (e.g.
// "http://127.0.0.1:7480"); Token is sent as a bearer credential; HTTP
// defaults to a client with a 30s timeout.
//
// API errors come back as *latchkey.Error with the server's code and
// message; transport failures as wrapped errors with code EUnavailable.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("latchkey client: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("latchkey client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "latchkey-cli")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return &latchkey.Error{Code: latchkey.EUnavailable, Message: "cannot reach " + c.BaseURL + ": " + err.Error()}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &latchkey.Error{Code: latchkey.EUnavailable, Message: "reading response: " + err.Error()}
	}
	if resp.StatusCode >= 400 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &latchkey.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &latchkey.Error{Code: latchkey.EInternal, Message: fmt.Sprintf("unexpected HTTP %d from server", resp.StatusCode)}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("latchkey client: decoding response: %w", err)
		}
	}
	return nil
}

// CreateToken issues a token. The plaintext is in the result's Plaintext.
func (c *Client) CreateToken(ctx context.Context, req CreateRequest) (*CreatedToken, error) {
	var out CreatedToken
	if err := c.do(ctx, "POST", "/v1/tokens", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListTokens returns one page of tokens.
func (c *Client) ListTokens(ctx context.Context, f latchkey.TokenFilter) (*TokenList, error) {
	q := url.Values{}
	set(q, "keyspace", f.Keyspace)
	set(q, "subject", f.Subject)
	set(q, "status", string(f.Status))
	set(q, "tag", f.Tag)
	set(q, "prefix", f.Prefix)
	set(q, "parent", f.ParentID)
	set(q, "q", f.Search)
	set(q, "sort", f.Sort)
	set(q, "order", f.Order)
	for name, v := range map[string]bool{"rotation_due": f.RotationDue, "never_used": f.NeverUsed, "count": f.Count} {
		if v {
			q.Set(name, "true")
		}
	}
	for name, d := range map[string]time.Duration{"expires_within": f.ExpiresWithin, "unused_for": f.UnusedFor} {
		if d > 0 {
			q.Set(name, latchkey.Duration(d).String())
		}
	}
	set(q, "cursor", f.Cursor)
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	var out TokenList
	if err := c.do(ctx, "GET", "/v1/tokens", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetToken returns one token's record.
func (c *Client) GetToken(ctx context.Context, id string) (*latchkey.Token, error) {
	var out latchkey.Token
	if err := c.do(ctx, "GET", "/v1/tokens/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken revokes a token.
func (c *Client) RevokeToken(ctx context.Context, id, reason string) (*latchkey.Token, error) {
	var out latchkey.Token
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/revoke", nil, RevokeRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Wait asks a revocation, suspension or bulk revocation to answer only
// once every live node has evicted what it changed, or Timeout (default
// 5s on the server, at most 30s) has passed; the answer carries the
// receipt. The change stands either way.
type Wait struct {
	Timeout time.Duration
}

func (w *Wait) query() url.Values {
	if w == nil {
		return nil
	}
	q := url.Values{"wait": {"all"}}
	if w.Timeout > 0 {
		q.Set("wait_timeout", w.Timeout.String())
	}
	return q
}

// TokenReceipt is a token as a change left it, with the change's receipt.
type TokenReceipt struct {
	latchkey.Token
	Receipt latchkey.Receipt `json:"receipt"`
}

// RevokeTokenWait is RevokeToken that waits for every live node (Wait).
func (c *Client) RevokeTokenWait(ctx context.Context, id, reason string, w Wait) (*TokenReceipt, error) {
	var out TokenReceipt
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/revoke", w.query(), RevokeRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SuspendTokenWait is SuspendToken that waits for every live node (Wait).
func (c *Client) SuspendTokenWait(ctx context.Context, id, reason string, w Wait) (*TokenReceipt, error) {
	var out TokenReceipt
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/suspend", w.query(), RevokeRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeWait is Revoke that waits for every live node (Wait); the result
// carries the receipt.
func (c *Client) RevokeWait(ctx context.Context, req RevocationRequest, w Wait) (*RevocationResult, error) {
	var out RevocationResult
	if err := c.do(ctx, "POST", "/v1/revocations", w.query(), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Receipts lists the node's last receipts, newest first.
func (c *Client) Receipts(ctx context.Context) ([]latchkey.Receipt, error) {
	var out struct {
		Receipts []latchkey.Receipt `json:"receipts"`
	}
	if err := c.do(ctx, "GET", "/v1/receipts", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Receipts, nil
}

// UpdateToken changes a token's name, meta or tags, or narrows its scopes.
func (c *Client) UpdateToken(ctx context.Context, id string, req UpdateRequest) (*latchkey.Token, error) {
	var out latchkey.Token
	if err := c.do(ctx, "PATCH", "/v1/tokens/"+url.PathEscape(id), nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SuspendToken suspends a token and its descendants.
func (c *Client) SuspendToken(ctx context.Context, id, reason string) (*latchkey.Token, error) {
	var out latchkey.Token
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/suspend", nil, RevokeRequest{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ResumeToken lifts a suspension.
func (c *Client) ResumeToken(ctx context.Context, id string) (*latchkey.Token, error) {
	var out latchkey.Token
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/resume", nil, struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RotateToken issues a successor; the old token works for grace longer.
func (c *Client) RotateToken(ctx context.Context, id string, grace string) (*RotatedToken, error) {
	var out RotatedToken
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/rotate", nil, RotateRequest{Grace: grace}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeriveToken mints a narrower child of token id. The client's token must
// be id itself or hold latchkey:tokens:write.
func (c *Client) DeriveToken(ctx context.Context, id string, req CreateRequest) (*CreatedToken, error) {
	var out CreatedToken
	if err := c.do(ctx, "POST", "/v1/tokens/"+url.PathEscape(id)+"/derive", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke revokes every token matching req (and their descendants).
func (c *Client) Revoke(ctx context.Context, req RevocationRequest) (*RevocationResult, error) {
	var out RevocationResult
	if err := c.do(ctx, "POST", "/v1/revocations", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Verify asks the server for a decision on a token.
func (c *Client) Verify(ctx context.Context, req VerifyRequest) (*VerifyResponse, error) {
	var out VerifyResponse
	if err := c.do(ctx, "POST", "/v1/verify", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListAudit returns one page of audit events.
func (c *Client) ListAudit(ctx context.Context, f latchkey.AuditFilter) (*AuditList, error) {
	q := auditQuery(f)
	set(q, "cursor", f.Cursor)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.Format(time.RFC3339Nano))
	}
	if f.After > 0 || f.Ascending {
		q.Set("after", fmt.Sprint(f.After))
	}
	if f.Limit > 0 {
		q.Set("limit", fmt.Sprint(f.Limit))
	}
	var out AuditList
	if err := c.do(ctx, "GET", "/v1/audit", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

// AuditSources tallies the audit records matching f (its paging fields
// aside) by client address: GET /v1/audit/sources.
func (c *Client) AuditSources(ctx context.Context, f latchkey.AuditFilter) (*latchkey.SourceReport, error) {
	q := auditQuery(f)
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		q.Set("until", f.Until.Format(time.RFC3339Nano))
	}
	var out latchkey.SourceReport
	if err := c.do(ctx, "GET", "/v1/audit/sources", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// auditQuery encodes the filters GET /v1/audit, its stream and its
// sources share.
func auditQuery(f latchkey.AuditFilter) url.Values {
	q := url.Values{}
	if f.Source.IsValid() {
		q.Set("client_ip", f.Source.String())
	}
	set(q, "keyspace", f.Keyspace)
	set(q, "token_id", f.TokenID)
	set(q, "subject", f.Subject)
	set(q, "outcome", f.Outcome)
	set(q, "kind", f.Kind)
	set(q, "action", f.Action)
	set(q, "node", f.Node)
	return q
}

// VerifyAudit asks the server to check the audit hash chain.
func (c *Client) VerifyAudit(ctx context.Context) (*latchkey.ChainReport, error) {
	var out latchkey.ChainReport
	if err := c.do(ctx, "GET", "/v1/audit/verify", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditSummary calls GET /v1/audit/summary: attempts per second and
// today, by outcome class.
func (c *Client) AuditSummary(ctx context.Context) (*ActivitySummary, error) {
	var out ActivitySummary
	if err := c.do(ctx, "GET", "/v1/audit/summary", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// StreamAudit follows GET /v1/audit/stream, calling fn for each record
// matching f (Since and Until are ignored), starting after sequence number
// after (0: from now). It reconnects with the last id it saw when the
// connection drops, and returns when ctx ends or fn returns an error.
func (c *Client) StreamAudit(ctx context.Context, f latchkey.AuditFilter, after int64, fn func(*latchkey.AuditEvent) error) error {
	hc := &http.Client{} // no overall timeout: a stream lasts
	if c.HTTP != nil {
		hc.Transport = c.HTTP.Transport
	}
	backoff := 100 * time.Millisecond
	for {
		err := c.streamOnce(ctx, hc, f, &after, fn)
		if ctx.Err() != nil {
			return nil
		}
		var le *latchkey.Error
		if errors.As(err, &le) && le.Code != latchkey.EUnavailable {
			return err // refused: reconnecting would not help
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (c *Client) streamOnce(ctx context.Context, hc *http.Client, f latchkey.AuditFilter, after *int64, fn func(*latchkey.AuditEvent) error) error {
	q := auditQuery(f)
	if *after > 0 {
		q.Set("after", fmt.Sprint(*after))
	}
	u := strings.TrimRight(c.BaseURL, "/") + "/v1/audit/stream"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return fmt.Errorf("latchkey client: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("User-Agent", "latchkey-cli")
	resp, err := hc.Do(req)
	if err != nil {
		return &latchkey.Error{Code: latchkey.EUnavailable, Message: err.Error()}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &latchkey.Error{Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &latchkey.Error{Code: latchkey.EUnavailable, Message: fmt.Sprintf("HTTP %d from the stream", resp.StatusCode)}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var data []byte
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0: // end of an event
			if len(data) > 0 {
				var ev latchkey.AuditEvent
				if err := json.Unmarshal(data, &ev); err != nil {
					return fmt.Errorf("latchkey client: stream: %w", err)
				}
				*after = max(*after, ev.Seq)
				if err := fn(&ev); err != nil {
					return err
				}
			}
			data = data[:0]
		case bytes.HasPrefix(line, []byte("data:")):
			data = append(data, bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" "))...)
		}
	}
	return &latchkey.Error{Code: latchkey.EUnavailable, Message: "stream ended"}
}

// ListBlocks returns the sources blocked now.
func (c *Client) ListBlocks(ctx context.Context) (*BlockList, error) {
	var out BlockList
	if err := c.do(ctx, "GET", "/v1/blocks", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveBlock lifts the block on a source (an address or an IPv6 /64).
func (c *Client) RemoveBlock(ctx context.Context, source string) error {
	return c.do(ctx, "DELETE", "/v1/blocks/"+source, nil, nil, nil)
}

// ListSessions lists the open sessions (database connections) held by
// the node that answers; tokenID, when set, keeps that token's.
func (c *Client) ListSessions(ctx context.Context, tokenID string) (*OpenSessionList, error) {
	var out OpenSessionList
	var q url.Values
	if tokenID != "" {
		q = url.Values{"token_id": {tokenID}}
	}
	if err := c.do(ctx, "GET", "/v1/sessions", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// EndSession ends an open session now; its client is told an
// administrator ended it. The token is untouched.
func (c *Client) EndSession(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/sessions/"+url.PathEscape(id), nil, nil, nil)
}

// ReportLeaks reports leaked tokens (authenticated as an admin).
func (c *Client) ReportLeaks(ctx context.Context, reports []LeakReport) ([]LeakResult, error) {
	var out []LeakResult
	if err := c.do(ctx, "POST", "/v1/leaks", nil, reports, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ListHolds lists the tool calls the MCP gateway holds, and the last
// decided.
func (c *Client) ListHolds(ctx context.Context) (*HeldCallList, error) {
	var out HeldCallList
	if err := c.do(ctx, "GET", "/v1/mcp/holds", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecideHold approves (or denies) a held tool call.
func (c *Client) DecideHold(ctx context.Context, id string, approve bool) (*latchkey.HeldCall, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var out latchkey.HeldCall
	if err := c.do(ctx, "POST", "/v1/mcp/holds/"+url.PathEscape(id)+"/"+verb, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListToolPins lists the MCP gateway's pinned tool definitions, with any
// changed definition waiting to be accepted.
func (c *Client) ListToolPins(ctx context.Context) (*ToolPinList, error) {
	var out ToolPinList
	if err := c.do(ctx, "GET", "/v1/mcp/tools", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AcceptTool accepts a tool's changed definition (the pending one's
// fingerprint): calls to it are allowed again.
func (c *Client) AcceptTool(ctx context.Context, server, tool, fingerprint string) (*latchkey.ToolPin, error) {
	var out latchkey.ToolPin
	if err := c.do(ctx, "POST", "/v1/mcp/tools/"+url.PathEscape(server)+"/"+url.PathEscape(tool)+"/accept", nil,
		AcceptToolRequest{Fingerprint: fingerprint}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListOAuthClients lists the OAuth authorization server's clients.
func (c *Client) ListOAuthClients(ctx context.Context) (*OAuthClientList, error) {
	var out OAuthClientList
	if err := c.do(ctx, "GET", "/v1/oauth/clients", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeOAuthClient revokes an OAuth client and every token issued to it.
func (c *Client) RevokeOAuthClient(ctx context.Context, clientID string) (*OAuthClientRevoked, error) {
	var out OAuthClientRevoked
	if err := c.do(ctx, "POST", "/v1/oauth/clients/revoke", nil, OAuthClientRevoke{ClientID: clientID}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListKeyspaces lists the keyspaces the caller reaches.
func (c *Client) ListKeyspaces(ctx context.Context) (*KeyspaceList, error) {
	var out KeyspaceList
	return &out, c.do(ctx, "GET", "/v1/keyspaces", nil, nil, &out)
}

// GetKeyspace returns one keyspace.
func (c *Client) GetKeyspace(ctx context.Context, name string) (*latchkey.Keyspace, error) {
	var out latchkey.Keyspace
	return &out, c.do(ctx, "GET", "/v1/keyspaces/"+url.PathEscape(name), nil, nil, &out)
}

// PutKeyspace creates a keyspace or changes its description and policy.
func (c *Client) PutKeyspace(ctx context.Context, k latchkey.Keyspace) (*latchkey.Keyspace, error) {
	var out latchkey.Keyspace
	return &out, c.do(ctx, "PUT", "/v1/keyspaces/"+url.PathEscape(k.Name), nil, k, &out)
}

// DeleteKeyspace deletes an empty keyspace.
func (c *Client) DeleteKeyspace(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/keyspaces/"+url.PathEscape(name), nil, nil, nil)
}

// ListRoles lists a keyspace's roles.
func (c *Client) ListRoles(ctx context.Context, keyspace string) (*RoleList, error) {
	var out RoleList
	return &out, c.do(ctx, "GET", "/v1/keyspaces/"+url.PathEscape(keyspace)+"/roles", nil, nil, &out)
}

// PutRole creates or changes a role: every token holding it changes at
// its next verification.
func (c *Client) PutRole(ctx context.Context, r latchkey.Role) (*latchkey.Role, error) {
	var out latchkey.Role
	return &out, c.do(ctx, "PUT", "/v1/keyspaces/"+url.PathEscape(latchkey.KeyspaceOf(r.Keyspace))+"/roles/"+url.PathEscape(r.Name), nil, r, &out)
}

// DeleteRole deletes a role.
func (c *Client) DeleteRole(ctx context.Context, keyspace, name string) error {
	return c.do(ctx, "DELETE", "/v1/keyspaces/"+url.PathEscape(keyspace)+"/roles/"+url.PathEscape(name), nil, nil, nil)
}

// ListIdentities lists a keyspace's subjects with shared limits.
func (c *Client) ListIdentities(ctx context.Context, keyspace string) (*IdentityList, error) {
	var out IdentityList
	return &out, c.do(ctx, "GET", "/v1/keyspaces/"+url.PathEscape(keyspace)+"/identities", nil, nil, &out)
}

// PutIdentity sets the limits shared by every token of a subject.
func (c *Client) PutIdentity(ctx context.Context, id latchkey.Identity) (*latchkey.Identity, error) {
	var out latchkey.Identity
	return &out, c.do(ctx, "PUT", "/v1/keyspaces/"+url.PathEscape(latchkey.KeyspaceOf(id.Keyspace))+"/identities/"+url.PathEscape(id.Subject), nil, id, &out)
}

// DeleteIdentity removes a subject's shared limits.
func (c *Client) DeleteIdentity(ctx context.Context, keyspace, subject string) error {
	return c.do(ctx, "DELETE", "/v1/keyspaces/"+url.PathEscape(keyspace)+"/identities/"+url.PathEscape(subject), nil, nil, nil)
}

// RequestAccess records an access request made with the client's token;
// the answer's ClaimCode collects the token once approvers agree.
func (c *Client) RequestAccess(ctx context.Context, req NewAccessRequest) (*CreatedAccessRequest, error) {
	var out CreatedAccessRequest
	return &out, c.do(ctx, "POST", "/v1/access-requests", nil, req, &out)
}

// ListAccessRequests lists the requests the caller may approve and its
// own (status "" for all).
func (c *Client) ListAccessRequests(ctx context.Context, status string) (*AccessRequestList, error) {
	q := url.Values{}
	set(q, "status", status)
	var out AccessRequestList
	return &out, c.do(ctx, "GET", "/v1/access-requests", q, nil, &out)
}

// GetAccessRequest returns one request.
func (c *Client) GetAccessRequest(ctx context.Context, id string) (*latchkey.AccessRequest, error) {
	var out latchkey.AccessRequest
	return &out, c.do(ctx, "GET", "/v1/access-requests/"+url.PathEscape(id), nil, nil, &out)
}

// DecideAccessRequest approves (or, approve false, denies) a request.
func (c *Client) DecideAccessRequest(ctx context.Context, id string, approve bool, comment string) (*latchkey.AccessRequest, error) {
	verb := "/deny"
	if approve {
		verb = "/approve"
	}
	var out latchkey.AccessRequest
	return &out, c.do(ctx, "POST", "/v1/access-requests/"+url.PathEscape(id)+verb, nil, VerdictRequest{Comment: comment}, &out)
}

// ClaimAccess collects an approved request's token with its claim code
// (no bearer token needed).
func (c *Client) ClaimAccess(ctx context.Context, id, code string) (*CreatedToken, error) {
	var out CreatedToken
	return &out, c.do(ctx, "POST", "/v1/access-requests/"+url.PathEscape(id)+"/claim", nil, ClaimRequest{Code: code}, &out)
}

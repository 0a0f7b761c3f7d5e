package httpapi

import (
	"context"
	"net/http"
	"net/url"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/secret"
)

// TenancyService manages keyspaces, roles, identities and access
// requests. *tenancy.Service satisfies it.
type TenancyService interface {
	Keyspaces() []latchkey.Keyspace
	Keyspace(name string) (latchkey.Keyspace, bool)
	PutKeyspace(ctx context.Context, a latchkey.Actor, k latchkey.Keyspace) (latchkey.Keyspace, bool, error)
	DeleteKeyspace(ctx context.Context, a latchkey.Actor, name string) error
	Roles(ks string) []latchkey.Role
	Role(ks, name string) (latchkey.Role, bool)
	PutRole(ctx context.Context, a latchkey.Actor, r latchkey.Role) (latchkey.Role, error)
	DeleteRole(ctx context.Context, a latchkey.Actor, ks, name string) error
	Identities(ks string) []latchkey.Identity
	Identity(ks, subject string) (*latchkey.Identity, bool)
	IdentityUses(ctx context.Context, id *latchkey.Identity) (int64, error)
	PutIdentity(ctx context.Context, a latchkey.Actor, id latchkey.Identity) (latchkey.Identity, error)
	DeleteIdentity(ctx context.Context, a latchkey.Actor, ks, subject string) error
	Request(ctx context.Context, a latchkey.Actor, nr client.NewAccessRequest) (latchkey.AccessRequest, string, error)
	Requests(ctx context.Context, visible func(*latchkey.AccessRequest) bool, status string) ([]latchkey.AccessRequest, error)
	GetRequest(ctx context.Context, id string) (latchkey.AccessRequest, error)
	Approve(ctx context.Context, a latchkey.Actor, id, comment string) (latchkey.AccessRequest, error)
	Deny(ctx context.Context, a latchkey.Actor, id, comment string) (latchkey.AccessRequest, error)
	Claim(ctx context.Context, a latchkey.Actor, id, code string) (*latchkey.Token, secret.Plaintext, error)
}

func (s *Server) tenancy() (TenancyService, error) {
	if s.Tenancy == nil {
		return nil, latchkey.Errorf(latchkey.ENotFound, "keyspaces are not served here")
	}
	return s.Tenancy, nil
}

// pathKeyspace is the {keyspace} of the path, which must exist and be
// within the caller's reach for perm; one outside it is not found, as if
// it did not exist.
func (s *Server) pathKeyspace(r *http.Request, a latchkey.Actor, perm string) (TenancyService, latchkey.Keyspace, error) {
	t, err := s.tenancy()
	if err != nil {
		return nil, latchkey.Keyspace{}, err
	}
	name := r.PathValue("keyspace")
	k, ok := t.Keyspace(name)
	if !a.Reach(perm).Has(name) || (!ok && r.Method != http.MethodPut) {
		return nil, k, latchkey.Errorf(latchkey.ENotFound, "no keyspace %q", name)
	}
	if !ok {
		k = latchkey.Keyspace{Name: name}
	}
	return t, k, nil
}

func (s *Server) listKeyspaces(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	if err := onlyParams(r.URL.Query()); err != nil {
		return err
	}
	reach := a.Reach(latchkey.PermTokensRead)
	out := []latchkey.Keyspace{}
	for _, k := range t.Keyspaces() {
		if reach.Has(k.Name) {
			out = append(out, k)
		}
	}
	writeJSON(w, http.StatusOK, client.KeyspaceList{Keyspaces: out})
	return nil
}

func (s *Server) getKeyspace(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	_, k, err := s.pathKeyspace(r, a, latchkey.PermTokensRead)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) putKeyspace(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var k latchkey.Keyspace
	if err := decode(w, r, &k); err != nil {
		return err
	}
	t, _, err := s.pathKeyspace(r, a, latchkey.PermAdmin)
	if err != nil {
		return err
	}
	name := r.PathValue("keyspace")
	if k.Name != "" && k.Name != name {
		return latchkey.Errorf(latchkey.EInvalid, "the body names keyspace %q but the path %q", k.Name, name)
	}
	k.Name = name
	out, created, err := t.PutKeyspace(r.Context(), a, k)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, out)
	return nil
}

func (s *Server) deleteKeyspace(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, _, err := s.pathKeyspace(r, a, latchkey.PermAdmin)
	if err != nil {
		return err
	}
	if err := t.DeleteKeyspace(r.Context(), a, r.PathValue("keyspace")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensRead)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.RoleList{Roles: t.Roles(k.Name)})
	return nil
}

func (s *Server) getRole(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensRead)
	if err != nil {
		return err
	}
	ro, ok := t.Role(k.Name, r.PathValue("role"))
	if !ok {
		return latchkey.Errorf(latchkey.ENotFound, "no role %q in keyspace %s", r.PathValue("role"), k.Name)
	}
	writeJSON(w, http.StatusOK, ro)
	return nil
}

func (s *Server) putRole(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var ro latchkey.Role
	if err := decode(w, r, &ro); err != nil {
		return err
	}
	t, k, err := s.pathKeyspace(r, a, latchkey.PermAdmin)
	if err != nil {
		return err
	}
	if ro.Name != "" && ro.Name != r.PathValue("role") || ro.Keyspace != "" && ro.Keyspace != k.Name {
		return latchkey.Errorf(latchkey.EInvalid, "the body names another role or keyspace than the path")
	}
	ro.Keyspace, ro.Name, ro.Version = k.Name, r.PathValue("role"), 0
	out, err := t.PutRole(r.Context(), a, ro)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteRole(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermAdmin)
	if err != nil {
		return err
	}
	if err := t.DeleteRole(r.Context(), a, k.Name, r.PathValue("role")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) identityStatus(ctx context.Context, t TenancyService, id *latchkey.Identity) (client.IdentityStatus, error) {
	uses, err := t.IdentityUses(ctx, id)
	return client.IdentityStatus{Identity: *id, Uses: uses}, err
}

func (s *Server) listIdentities(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensRead)
	if err != nil {
		return err
	}
	out := client.IdentityList{Identities: []client.IdentityStatus{}}
	for _, id := range t.Identities(k.Name) {
		st, err := s.identityStatus(r.Context(), t, &id)
		if err != nil {
			return err
		}
		out.Identities = append(out.Identities, st)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pathSubject is the {subject} of the path, unescaped once.
func pathSubject(r *http.Request) string {
	s := r.PathValue("subject")
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

func (s *Server) getIdentity(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensRead)
	if err != nil {
		return err
	}
	id, ok := t.Identity(k.Name, pathSubject(r))
	if !ok {
		return latchkey.Errorf(latchkey.ENotFound, "no identity %q in keyspace %s", pathSubject(r), k.Name)
	}
	st, err := s.identityStatus(r.Context(), t, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (s *Server) putIdentity(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	var id latchkey.Identity
	if err := decode(w, r, &id); err != nil {
		return err
	}
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensWrite)
	if err != nil {
		return err
	}
	if id.Subject != "" && id.Subject != pathSubject(r) || id.Keyspace != "" && id.Keyspace != k.Name {
		return latchkey.Errorf(latchkey.EInvalid, "the body names another subject or keyspace than the path")
	}
	id.Keyspace, id.Subject = k.Name, pathSubject(r)
	out, err := t.PutIdentity(r.Context(), a, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteIdentity(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, k, err := s.pathKeyspace(r, a, latchkey.PermTokensWrite)
	if err != nil {
		return err
	}
	if err := t.DeleteIdentity(r.Context(), a, k.Name, pathSubject(r)); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) createAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	var nr client.NewAccessRequest
	if err := decode(w, r, &nr); err != nil {
		return err
	}
	req, code, err := t.Request(r.Context(), a, nr)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/access-requests/"+req.ID)
	writeJSON(w, http.StatusCreated, client.CreatedAccessRequest{AccessRequest: &req, ClaimCode: code})
	return nil
}

// visibleTo reports whether a may see request q: its approvers (the
// approve permission in its keyspace) and its requester may.
func visibleTo(a latchkey.Actor) func(q *latchkey.AccessRequest) bool {
	reach := a.Reach(latchkey.PermApprove)
	return func(q *latchkey.AccessRequest) bool {
		return reach.Has(q.Keyspace) || q.RequestBy == a.TokenID || a.Subject != "" && q.Requester == a.Subject && q.Keyspace == latchkey.KeyspaceOf(a.Keyspace)
	}
}

func (s *Server) listAccessRequests(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if err := onlyParams(q, "status", "keyspace"); err != nil {
		return err
	}
	status := q.Get("status")
	switch status {
	case "", latchkey.RequestPending, latchkey.RequestApproved, latchkey.RequestDenied, latchkey.RequestClaimed, latchkey.RequestExpired:
	default:
		return latchkey.Errorf(latchkey.EInvalid, "status must be pending, approved, denied, claimed or expired")
	}
	see := visibleTo(a)
	ks := q.Get("keyspace")
	reqs, err := t.Requests(r.Context(), func(q *latchkey.AccessRequest) bool {
		return see(q) && (ks == "" || q.Keyspace == ks)
	}, status)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, client.AccessRequestList{Requests: reqs})
	return nil
}

func (s *Server) getAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	q, err := t.GetRequest(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !visibleTo(a)(&q) {
		return latchkey.Errorf(latchkey.ENotFound, "no access request %s", r.PathValue("id"))
	}
	writeJSON(w, http.StatusOK, q)
	return nil
}

func (s *Server) decideAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor,
	fn func(t TenancyService, ctx context.Context, a latchkey.Actor, id, comment string) (latchkey.AccessRequest, error)) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	var v client.VerdictRequest
	if err := optionalBody(w, r, &v); err != nil {
		return err
	}
	q, err := fn(t, r.Context(), a, r.PathValue("id"), v.Comment)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, q)
	return nil
}

func (s *Server) approveAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	return s.decideAccessRequest(w, r, a, TenancyService.Approve)
}

func (s *Server) denyAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	return s.decideAccessRequest(w, r, a, TenancyService.Deny)
}

// claimAccessRequest hands the approved token to whoever holds the claim
// code, once. The code is the credential: no bearer token is needed.
func (s *Server) claimAccessRequest(w http.ResponseWriter, r *http.Request, a latchkey.Actor) error {
	t, err := s.tenancy()
	if err != nil {
		return err
	}
	var c client.ClaimRequest
	if err := decode(w, r, &c); err != nil {
		return err
	}
	if c.Code == "" {
		return latchkey.Errorf(latchkey.EInvalid, "code is required")
	}
	tok, pt, err := t.Claim(r.Context(), a, r.PathValue("id"), c.Code)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, client.CreatedToken{Plaintext: pt.Reveal(), Token: tok})
	return nil
}

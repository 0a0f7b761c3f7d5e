package tokens_test

import (
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tokens"
)

// Issue 12 item 5: a latchkey:tokens:write holder cannot mint a peer
// without its own expiry, networks, budget or other limits, and what it
// mints does not outlive it.
func TestWriterCannotShedConstraints(t *testing.T) {
	t.Parallel()
	e := newEnv(t, tokens.Policy{})
	writer, _ := e.create(client.CreateRequest{Subject: "provisioner", TTL: "1h",
		Scopes: []string{latchkey.ScopeTokensWrite, "invoices:*"}, AllowedCIDRs: []string{"10.0.0.0/8"}, AllowedMethods: []string{"GET"},
		AllowedPaths: []string{"/v1/**"}, IdleTimeout: "30m", MaxUses: 100, RateLimit: &client.RateRequest{Limit: 10, Window: "1m"}})
	as := latchkey.Actor{TokenID: writer.ID, Scopes: writer.Scopes}

	// Asking for more than the writer has is refused, dimension by dimension.
	for name, req := range map[string]client.CreateRequest{
		"later expiry":   {Scopes: []string{"invoices:read"}, TTL: "2h"},
		"other network":  {Scopes: []string{"invoices:read"}, AllowedCIDRs: []string{"0.0.0.0/0"}},
		"other method":   {Scopes: []string{"invoices:read"}, AllowedMethods: []string{"DELETE"}},
		"wider path":     {Scopes: []string{"invoices:read"}, AllowedPaths: []string{"/**"}},
		"longer idle":    {Scopes: []string{"invoices:read"}, IdleTimeout: "2h"},
		"bigger budget":  {Scopes: []string{"invoices:read"}, MaxUses: 1000},
		"faster rate":    {Scopes: []string{"invoices:read"}, RateLimit: &client.RateRequest{Limit: 100, Window: "1m"}},
		"scope not held": {Scopes: []string{"reports:read"}},
		"admin scope":    {Scopes: []string{latchkey.AdminScope}},
	} {
		if _, _, err := e.svc.Create(ctx, as, req); latchkey.ErrorCode(err) != latchkey.EPermissionDenied {
			t.Errorf("%s: %v, want permission_denied", name, err)
		}
	}

	// Asking for nothing inherits everything, and the subject is the
	// caller's to choose.
	peer, pt, err := e.svc.Create(ctx, as, client.CreateRequest{Subject: "customer-7", Scopes: []string{"invoices:read"}})
	if err != nil {
		t.Fatal(err)
	}
	if peer.Subject != "customer-7" || peer.ParentID != writer.ID || !peer.ExpiresAt.Equal(writer.ExpiresAt) ||
		len(peer.AllowedCIDRs) != 1 || peer.AllowedMethods[0] != "GET" || peer.AllowedPaths[0] != "/v1/**" ||
		peer.MaxUses == 0 || peer.MaxUses > 100 || peer.RateLimit == nil || peer.IdleTimeout != latchkey.Duration(30*time.Minute) {
		t.Errorf("peer is looser than its writer: %+v", peer)
	}
	if c := e.code(pt.Reveal(), "invoices:read"); c != latchkey.Valid {
		t.Errorf("peer: %v", c)
	}
	// Revoking the writer revokes what it made.
	if _, err := e.svc.Revoke(ctx, admin, writer.ID, "rotated out"); err != nil {
		t.Fatal(err)
	}
	if c := e.code(pt.Reveal(), "invoices:read"); c != latchkey.Revoked {
		t.Errorf("peer after its writer's revocation: %v", c)
	}
	// An admin still issues independent tokens.
	free, _ := e.create(client.CreateRequest{Subject: "svc"})
	if free.ParentID != "" || !free.ExpiresAt.IsZero() {
		t.Errorf("admin-created token: %+v", free)
	}
}

package tokens_test

import (
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
	"github.com/latchkeyhq/latchkey/tenancy"
	"github.com/latchkeyhq/latchkey/tokens"
	"github.com/latchkeyhq/latchkey/verify"
)

// newTenantEnv is newEnv with a registry holding keyspace acme (prefix
// acme_live, a policy) and its roles.
func newTenantEnv(t *testing.T, p tokens.Policy) (*env, *tenancy.Service) {
	e := newEnv(t, p)
	reg := &tenancy.Registry{}
	ten := &tenancy.Service{Store: e.db, Registry: reg, Now: e.clock}
	e.svc.Tenancy = reg
	if _, _, err := ten.PutKeyspace(ctx, admin, latchkey.Keyspace{Name: "acme", Prefix: "acme_live", Policy: latchkey.KeyspacePolicy{
		DefaultTTL: latchkey.Duration(24 * time.Hour), MaxLifetime: latchkey.Duration(30 * 24 * time.Hour),
		MaxIdleTimeout: latchkey.Duration(7 * 24 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ten.PutRole(ctx, admin, latchkey.Role{Keyspace: "acme", Name: "reader", Scopes: []string{"invoices:read", "customers:read"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ten.PutRole(ctx, admin, latchkey.Role{Keyspace: "acme", Name: "writer", Scopes: []string{"invoices:write"}}); err != nil {
		t.Fatal(err)
	}
	return e, ten
}

func TestKeyspacePolicyAndPrefix(t *testing.T) {
	t.Parallel()
	e, _ := newTenantEnv(t, tokens.Policy{})
	tok, _ := e.create(client.CreateRequest{Keyspace: "acme"})
	if tok.Keyspace != "acme" || tok.Prefix != "acme_live" || !tok.ExpiresAt.Equal(e.clock().Add(24*time.Hour)) || tok.IdleTimeout != latchkey.Duration(7*24*time.Hour) {
		t.Errorf("an acme token: keyspace %q prefix %q expires %v idle %v", tok.Keyspace, tok.Prefix, tok.ExpiresAt, tok.IdleTimeout)
	}
	for name, req := range map[string]client.CreateRequest{
		"longer than the keyspace allows": {Keyspace: "acme", TTL: "60d"},
		"another prefix":                  {Keyspace: "acme", Prefix: "lk"},
		"idle timeout above the cap":      {Keyspace: "acme", IdleTimeout: "30d"},
		"no such keyspace":                {Keyspace: "nope"},
		"no such role":                    {Keyspace: "acme", Roles: []string{"nope"}},
		"another keyspace's admin scope":  {Keyspace: "acme", Scopes: []string{latchkey.KeyspaceScope("beta", "admin")}},
	} {
		if _, _, err := e.svc.Create(ctx, admin, req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// The default keyspace keeps today's behaviour.
	if tok, _ := e.create(client.CreateRequest{}); tok.Keyspace != latchkey.DefaultKeyspace || !tok.ExpiresAt.IsZero() || tok.Prefix != "lk" {
		t.Errorf("a default token: %q %v %q", tok.Keyspace, tok.ExpiresAt, tok.Prefix)
	}
}

func TestRolesAndDerivation(t *testing.T) {
	t.Parallel()
	e, ten := newTenantEnv(t, tokens.Policy{})
	// A keyspace admin issues root tokens in its keyspace with any
	// application scope and role, never latchkey's global scopes.
	ksAdmin := latchkey.Actor{TokenID: "KsAdmin000000000", Keyspace: latchkey.DefaultKeyspace, Scopes: []string{latchkey.KeyspaceScope("acme", "admin")}}
	parent, ppt, err := e.svc.Create(ctx, ksAdmin, client.CreateRequest{Keyspace: "acme", Subject: "svc", Roles: []string{"reader"}, Scopes: []string{"orders:read"}})
	if err != nil || parent.ParentID != "" || len(parent.Roles) != 1 {
		t.Fatalf("the keyspace admin's token: %+v %v", parent, err)
	}
	for _, sc := range []string{latchkey.AdminScope, latchkey.ScopeTokensWrite} {
		if _, _, err := e.svc.Create(ctx, ksAdmin, client.CreateRequest{Keyspace: "acme", Scopes: []string{sc}}); err == nil {
			t.Errorf("a keyspace admin granted %s", sc)
		}
	}
	if _, _, err := e.svc.Create(ctx, ksAdmin, client.CreateRequest{Scopes: []string{"orders:read"}}); err == nil {
		t.Errorf("a keyspace admin issuing in the default keyspace: %v", err)
	}
	// A derived token stays in its parent's keyspace, keeps its roles by
	// default, may drop them, never add one, and its scopes are judged
	// against the parent's own and its roles'.
	self := latchkey.Actor{TokenID: parent.ID, Keyspace: "acme", Scopes: e.svc.EffectiveScopes(parent)}
	kid, _ := e.derive(self, parent.ID, client.CreateRequest{Scopes: []string{"invoices:read"}})
	if kid.Keyspace != "acme" || len(kid.Roles) != 1 || kid.Prefix != "acme_live" {
		t.Errorf("the child: keyspace %q roles %v prefix %q", kid.Keyspace, kid.Roles, kid.Prefix)
	}
	if kid2, _ := e.derive(self, parent.ID, client.CreateRequest{Scopes: []string{"orders:read"}, Roles: []string{}}); len(kid2.Roles) != 0 {
		t.Errorf("a child that dropped its roles holds %v", kid2.Roles)
	}
	for name, req := range map[string]client.CreateRequest{
		"a role the parent lacks": {Roles: []string{"writer"}},
		"a scope beyond both":     {Scopes: []string{"invoices:write"}},
		"another keyspace":        {Keyspace: latchkey.DefaultKeyspace},
	} {
		if _, _, err := e.svc.Derive(ctx, self, parent.ID, req); err == nil {
			t.Errorf("derive with %s: accepted", name)
		}
	}
	// Changing a role is seen at the next verification.
	v := verify.New(e.db, e.svc.Hasher, nil, verify.Config{Now: e.clock, Tenancy: ten.Registry})
	ten.Changed = v.Retenant
	code := func(scope string) latchkey.Code {
		d, err := v.Verify(ctx, &latchkey.VerifyRequest{Token: ppt.Reveal(), Keyspace: "acme", Scopes: []string{scope}})
		if err != nil {
			t.Fatal(err)
		}
		return d.Code
	}
	if code("orders:read") != latchkey.Valid || code("customers:read") != latchkey.Valid || code("invoices:write") != latchkey.InsufficientScope {
		t.Error("the token's own scopes and its role's")
	}
	if _, err := ten.PutRole(ctx, admin, latchkey.Role{Keyspace: "acme", Name: "reader", Scopes: []string{"invoices:write"}}); err != nil {
		t.Fatal(err)
	}
	if code("customers:read") != latchkey.InsufficientScope || code("invoices:write") != latchkey.Valid {
		t.Error("after the role changed, the token did not follow it")
	}
}

package latchkey

import (
	"slices"
	"testing"
)

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"acme", "a", "acme-live", "a1-b2"} {
		if err := ValidateName("keyspace", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Acme", "1acme", "-a", "a_b", "a.b", "a:b", "a/b", "a b", string(make([]byte, 65))} {
		if ValidateName("keyspace", bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A keyspace's admin scope covers that keyspace's scopes only; latchkey's
// global admin covers them all; an application wildcard covers none.
func TestKeyspaceScopeCovers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		granted, required string
		want              bool
	}{
		{"latchkey:keyspaces.acme:admin", "latchkey:keyspaces.acme:tokens:write", true},
		{"latchkey:keyspaces.acme:admin", "latchkey:keyspaces.acme:approve", true},
		{"latchkey:keyspaces.acme:admin", "latchkey:keyspaces.beta:tokens:read", false},
		{"latchkey:keyspaces.acme:admin", "latchkey:tokens:read", false},
		{"latchkey:keyspaces.acme:admin", "latchkey:admin", false},
		{"latchkey:keyspaces.*:admin", "latchkey:keyspaces.beta:audit:read", true},
		{"latchkey:keyspaces.acme:tokens:read", "latchkey:keyspaces.acme:tokens:write", false},
		{"latchkey:admin", "latchkey:keyspaces.acme:admin", true},
		{"*", "latchkey:keyspaces.acme:admin", false},
		{"latchkey:keyspaces.acme-x:admin", "latchkey:keyspaces.acme:admin", false},
	} {
		if got := ScopeCovers(c.granted, c.required); got != c.want {
			t.Errorf("ScopeCovers(%q, %q) = %v, want %v", c.granted, c.required, got, c.want)
		}
	}
}

func TestReachOf(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		ks      string
		granted []string
		perm    string
		all     bool
		in      []string
	}{
		{"global admin", "", []string{AdminScope}, PermTokensRead, true, nil},
		{"global reader", DefaultKeyspace, []string{ScopeTokensRead}, PermTokensRead, true, nil},
		{"global reader writes nowhere", DefaultKeyspace, []string{ScopeTokensRead}, PermTokensWrite, false, nil},
		{"keyspace admin", DefaultKeyspace, []string{KeyspaceScope("acme", PermAdmin)}, PermTokensWrite, false, []string{"acme"}},
		{"two keyspaces", DefaultKeyspace, []string{KeyspaceScope("acme", PermAuditRead), KeyspaceScope("beta", PermAdmin)}, PermAuditRead, false, []string{"acme", "beta"}},
		{"every keyspace", DefaultKeyspace, []string{KeyspaceScope("*", PermAdmin)}, PermApprove, true, nil},
		// A token of a keyspace never acts outside it.
		{"confined admin", "acme", []string{AdminScope}, PermTokensRead, false, []string{"acme"}},
		{"confined wildcard", "acme", []string{KeyspaceScope("*", PermAdmin)}, PermTokensRead, false, []string{"acme"}},
		{"another keyspace's scope is inert", "acme", []string{KeyspaceScope("beta", PermAdmin)}, PermTokensRead, false, nil},
		{"approve", "acme", []string{ScopeApprove}, PermApprove, false, []string{"acme"}},
		{"application scopes reach nothing", DefaultKeyspace, []string{"*", "orders:*"}, PermTokensRead, false, nil},
	} {
		r := ReachOf(c.ks, c.granted, c.perm)
		if r.All != c.all || !slices.Equal(r.Keyspaces, c.in) {
			t.Errorf("%s: ReachOf = %+v, want all=%v %v", c.name, r, c.all, c.in)
		}
		if r.Any() != (c.all || len(c.in) > 0) || HoldsPermission(c.ks, c.granted, c.perm) != r.Any() {
			t.Errorf("%s: Any/HoldsPermission disagree with %+v", c.name, r)
		}
	}
	if !HoldsPermission(DefaultKeyspace, []string{KeyspaceScope("acme", PermApprove)}, PermAuditRead+"|"+PermApprove) {
		t.Error("alternatives: an approver holds audit:read|approve")
	}
	if (Actor{Scopes: []string{AdminScope}}).Reach(PermAdmin).Any() {
		t.Error("an actor without a token reaches something")
	}
	r := Reach{Keyspaces: []string{DefaultKeyspace}}
	if !r.Has("") || r.Has("acme") {
		t.Error("Reach.Has: the empty name is the default keyspace")
	}
}

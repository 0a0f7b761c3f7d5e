// Package tenancy holds latchkey's keyspaces, roles, identities with
// shared limits, and access requests (docs/architecture.md §11).
//
// Keyspaces, roles and identities are store settings under "tenancy/",
// changed with Store.ChangeSetting (one transaction with the audit
// record, announced to every node). Each node keeps them all in memory in
// a Registry, which the verifier and the token service read; a change
// reloads the registry and drops the verifier's cache, so a role change
// reaches every token holding it at its next verification, on every node,
// within the same bound as a revocation.
//
// Access requests are settings under "access/request/", read from the
// store when asked for (they are few and short-lived).
package tenancy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/latchkeyhq/latchkey"
)

// Setting key prefixes.
const (
	Prefix         = "tenancy/"
	keyspacePrefix = Prefix + "keyspace/"
	rolePrefix     = Prefix + "role/"
	identityPrefix = Prefix + "identity/"
	requestPrefix  = "access/request/"
)

func keyspaceKey(name string) string { return keyspacePrefix + name }
func roleKey(ks, name string) string { return rolePrefix + ks + "/" + name }
func identityKey(ks, subject string) string {
	return identityPrefix + ks + "/" + url.PathEscape(subject)
}
func requestKey(id string) string { return requestPrefix + id }

// Affects reports whether a changed setting is one the registry holds
// (so the registry reloads and the verifier's cache is dropped).
func Affects(key string) bool { return strings.HasPrefix(key, Prefix) }

// Registry is one node's copy of the keyspaces, roles and identities.
// Reads are lock-free; Load replaces the whole snapshot.
type Registry struct {
	snap atomic.Pointer[snapshot]
}

type snapshot struct {
	keyspaces map[string]latchkey.Keyspace
	roles     map[string]latchkey.Role     // ks/name
	idents    map[string]latchkey.Identity // ks/subject
}

// SettingsReader is what Load reads. latchkey.Store satisfies it.
type SettingsReader interface {
	SettingsWithPrefix(ctx context.Context, prefix string) (map[string]string, error)
}

// Load reads every keyspace, role and identity from st.
func (r *Registry) Load(ctx context.Context, st SettingsReader) error {
	all, err := st.SettingsWithPrefix(ctx, Prefix)
	if err != nil {
		return fmt.Errorf("tenancy: load: %w", err)
	}
	s := &snapshot{keyspaces: map[string]latchkey.Keyspace{}, roles: map[string]latchkey.Role{}, idents: map[string]latchkey.Identity{}}
	for key, v := range all {
		switch {
		case strings.HasPrefix(key, keyspacePrefix):
			var k latchkey.Keyspace
			if err := json.Unmarshal([]byte(v), &k); err != nil {
				return fmt.Errorf("tenancy: load %s: %w", key, err)
			}
			s.keyspaces[k.Name] = k
		case strings.HasPrefix(key, rolePrefix):
			var ro latchkey.Role
			if err := json.Unmarshal([]byte(v), &ro); err != nil {
				return fmt.Errorf("tenancy: load %s: %w", key, err)
			}
			s.roles[ro.Keyspace+"/"+ro.Name] = ro
		case strings.HasPrefix(key, identityPrefix):
			var id latchkey.Identity
			if err := json.Unmarshal([]byte(v), &id); err != nil {
				return fmt.Errorf("tenancy: load %s: %w", key, err)
			}
			s.idents[id.Keyspace+"/"+id.Subject] = id
		}
	}
	r.snap.Store(s)
	return nil
}

func (r *Registry) get() *snapshot {
	if s := r.snap.Load(); s != nil {
		return s
	}
	return &snapshot{}
}

// Keyspace returns keyspace name; the default keyspace always exists.
func (r *Registry) Keyspace(name string) (latchkey.Keyspace, bool) {
	name = latchkey.KeyspaceOf(name)
	k, ok := r.get().keyspaces[name]
	if !ok && name == latchkey.DefaultKeyspace {
		return latchkey.Keyspace{Name: name}, true
	}
	return k, ok
}

// Keyspaces lists every keyspace, the default one first, then by name.
func (r *Registry) Keyspaces() []latchkey.Keyspace {
	s := r.get()
	out := []latchkey.Keyspace{}
	def, _ := r.Keyspace(latchkey.DefaultKeyspace)
	out = append(out, def)
	for name, k := range s.keyspaces {
		if name != latchkey.DefaultKeyspace {
			out = append(out, k)
		}
	}
	slices.SortFunc(out[1:], func(a, b latchkey.Keyspace) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RoleScopes implements verify.Tenancy and tokens.Tenancy.
func (r *Registry) RoleScopes(ks, role string) ([]string, bool) {
	ro, ok := r.get().roles[latchkey.KeyspaceOf(ks)+"/"+role]
	return ro.Scopes, ok
}

// Role returns one role.
func (r *Registry) Role(ks, name string) (latchkey.Role, bool) {
	ro, ok := r.get().roles[latchkey.KeyspaceOf(ks)+"/"+name]
	return ro, ok
}

// Roles lists keyspace ks's roles by name.
func (r *Registry) Roles(ks string) []latchkey.Role {
	out := []latchkey.Role{}
	for _, ro := range r.get().roles {
		if ro.Keyspace == ks {
			out = append(out, ro)
		}
	}
	slices.SortFunc(out, func(a, b latchkey.Role) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Identity implements verify.Tenancy.
func (r *Registry) Identity(ks, subject string) (*latchkey.Identity, bool) {
	id, ok := r.get().idents[latchkey.KeyspaceOf(ks)+"/"+subject]
	if !ok {
		return nil, false
	}
	return &id, true
}

// Identities lists keyspace ks's identities by subject.
func (r *Registry) Identities(ks string) []latchkey.Identity {
	out := []latchkey.Identity{}
	for _, id := range r.get().idents {
		if id.Keyspace == ks {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b latchkey.Identity) int { return strings.Compare(a.Subject, b.Subject) })
	return out
}

// RotateAfter implements verify.Tenancy.
func (r *Registry) RotateAfter(ks string) time.Duration {
	k, _ := r.Keyspace(ks)
	return time.Duration(k.Policy.RotateAfter)
}

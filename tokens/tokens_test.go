package tokens

import (
	"testing"

	"github.com/latchkeyhq/latchkey"
)

func TestCanGrant(t *testing.T) {
	tests := []struct {
		granted []string
		scope   string
		want    bool
	}{
		{[]string{latchkey.AdminScope}, "invoices:read", true},
		{[]string{latchkey.AdminScope}, latchkey.AdminScope, true},
		{[]string{latchkey.ScopeTokensWrite}, latchkey.AdminScope, false},
		{[]string{latchkey.ScopeTokensWrite}, latchkey.ScopeAuditRead, false},
		{[]string{latchkey.ScopeTokensWrite}, "invoices:read", false},
		{[]string{latchkey.ScopeTokensWrite, "invoices:*"}, "invoices:read", true},
		{[]string{latchkey.ScopeTokensWrite, "invoices:*"}, latchkey.ScopeTokensWrite, true},
		{[]string{"*"}, latchkey.ScopeVerify, false},
		{[]string{"latchkey:*"}, latchkey.AdminScope, true},
	}
	for _, tt := range tests {
		if got := CanGrant(tt.granted, tt.scope); got != tt.want {
			t.Errorf("CanGrant(%v, %q) = %v, want %v", tt.granted, tt.scope, got, tt.want)
		}
	}
}

func TestValidateTag(t *testing.T) {
	for _, ok := range []string{"prod", "team:billing", "v1.2-rc_3"} {
		if err := ValidateTag(ok); err != nil {
			t.Errorf("ValidateTag(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "x/y", string(make([]byte, 65))} {
		if err := ValidateTag(bad); err == nil {
			t.Errorf("ValidateTag(%q) succeeded", bad)
		}
	}
}

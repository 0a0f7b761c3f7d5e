package latchkey_test

import (
	"testing"
	"time"

	"github.com/latchkeyhq/latchkey"
)

func TestEffectiveStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		tok  latchkey.Token
		want latchkey.Status
	}{
		{"active", latchkey.Token{Status: latchkey.StatusActive, CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour)}, latchkey.StatusActive},
		{"never expires", latchkey.Token{Status: latchkey.StatusActive, CreatedAt: now.Add(-time.Hour)}, latchkey.StatusActive},
		{"expired", latchkey.Token{Status: latchkey.StatusActive, ExpiresAt: now}, latchkey.StatusExpired},
		{"revoked stays revoked", latchkey.Token{Status: latchkey.StatusRevoked, ExpiresAt: now.Add(-time.Hour)}, latchkey.StatusRevoked},
		{"suspended", latchkey.Token{Status: latchkey.StatusSuspended}, latchkey.StatusSuspended},
		{"idle", latchkey.Token{Status: latchkey.StatusActive, CreatedAt: now.Add(-3 * time.Hour), LastUsedAt: now.Add(-2 * time.Hour),
			Constraints: latchkey.Constraints{IdleTimeout: latchkey.Duration(time.Hour)}}, latchkey.StatusIdle},
		{"used recently", latchkey.Token{Status: latchkey.StatusActive, CreatedAt: now.Add(-3 * time.Hour), LastUsedAt: now.Add(-time.Minute),
			Constraints: latchkey.Constraints{IdleTimeout: latchkey.Duration(time.Hour)}}, latchkey.StatusActive},
		{"rotated, in grace", latchkey.Token{Status: latchkey.StatusActive, SuccessorID: "x", ExpiresAt: now.Add(time.Minute)}, latchkey.StatusRotated},
		{"rotated, grace over", latchkey.Token{Status: latchkey.StatusActive, SuccessorID: "x", ExpiresAt: now.Add(-time.Minute)}, latchkey.StatusExpired},
	} {
		if got := c.tok.EffectiveStatus(now); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

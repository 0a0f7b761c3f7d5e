package postgres

import (
	"context"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/internal/tokenrow"
)

// PollOnce reads the change log once, as the poll does.
func (f *Follower) PollOnce(ctx context.Context) error { return f.pollOnce(ctx) }

// ListingSQL is the query ListTokens runs for f, and its arguments.
func ListingSQL(f latchkey.TokenFilter) (string, []any, error) {
	l, err := tokenrow.NewListing(f)
	if err != nil {
		return "", nil, err
	}
	var a args
	q, err := l.Page(a.dialect())
	return q, a.v, err
}

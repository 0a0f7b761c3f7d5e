package postgres

import "context"

// PollOnce reads the change log once, as the poll does.
func (f *Follower) PollOnce(ctx context.Context) error { return f.pollOnce(ctx) }

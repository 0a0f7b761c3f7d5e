package main

import (
	"context"
	"fmt"
	"time"

	"github.com/latchkeyhq/latchkey/audit"
	"github.com/latchkeyhq/latchkey/httpapi"
	"github.com/latchkeyhq/latchkey/tenancy"
)

// startLoops runs the daemon's background work in its errgroup. Each loop
// ends when ctx does, and each run of its work is bounded by ctx too, so
// Shutdown is not held up by a prune or a listing in progress.
func (d *daemon) startLoops(ctx context.Context) {
	if d.cfg.AuditRetention > 0 {
		every := d.cfg.AuditPruneInterval
		if every <= 0 {
			every = time.Hour
		}
		d.every(ctx, every, true, d.pruneAudit)
	}
	if d.cfg.Policy.RotationAge > 0 {
		d.every(ctx, time.Hour, true, func(ctx context.Context) {
			if err := d.svc.AnnounceRotationDue(ctx); err != nil && ctx.Err() == nil {
				d.logger.Error("announcing tokens due for rotation failed; will retry", "err", err)
			}
		})
	}
	d.every(ctx, time.Second, false, d.publishActivity)
	// Open sessions (database connections) are verified again as their
	// tokens change, expire or idle.
	d.loops.Go(func() error {
		d.sessions.Run(ctx)
		return nil
	})
	if d.api.UI != nil {
		d.every(ctx, time.Hour, true, d.pruneSessions)
		d.every(ctx, 10*time.Minute, false, d.pruneOAuth)
	}
	d.every(ctx, time.Hour, false, d.pruneRequests)
	if d.redis != nil {
		d.every(ctx, redisEpochEvery, true, d.checkRedisEpoch)
	}
	if d.nameLost != nil {
		// Another process took this node's name over (this one could not
		// renew it, and the other was started with the same --node): two
		// nodes must not serve under one name, so this one stops.
		d.loops.Go(func() error {
			select {
			case <-ctx.Done():
				return nil
			case <-d.nameLost:
				return fmt.Errorf("another process now holds the node name %q; stopping", d.node)
			}
		})
	}
	if d.feed != nil {
		// Other nodes' changes: notifications, and the change log polled
		// as a backstop.
		d.loops.Go(func() error {
			d.feed.Follow(ctx, clusterChanges{d, ctx})
			return nil
		})
	}
}

// every runs fn every interval (and once at once, when first) until ctx
// ends.
func (d *daemon) every(ctx context.Context, interval time.Duration, first bool, fn func(context.Context)) {
	d.loops.Go(func() error {
		if first {
			fn(ctx)
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				fn(ctx)
			}
		}
	})
}

// pruneAudit deletes the audit records older than the retention period,
// archiving them first when an archive directory is set.
func (d *daemon) pruneAudit(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	now := time.Now()
	before := now.Add(-d.cfg.AuditRetention)
	n, err := audit.Prune(ctx, d.db, before, d.cfg.AuditArchiveDir, now)
	if err != nil {
		if ctx.Err() == nil {
			d.logger.Error("audit retention: pruning failed; will retry", "err", err, "pruned", n)
		}
		return
	}
	if n > 0 {
		d.logger.Info("audit retention: pruned old records", "records", n, "before", before.UTC().Format(time.RFC3339))
	}
}

// pruneSessions deletes the records of signed-out dashboard sessions
// whose cookies have expired anyway.
func (d *daemon) pruneSessions(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if n, err := httpapi.PruneSessionEnds(ctx, d.db, time.Now()); err != nil {
		if ctx.Err() == nil {
			d.logger.Warn("pruning ended dashboard sessions failed", "err", err)
		}
	} else if n > 0 {
		d.logger.Debug("pruned ended dashboard sessions", "count", n)
	}
}

// pruneOAuth deletes the authorization server's spent requests and codes.
func (d *daemon) pruneOAuth(ctx context.Context) {
	if d.oauth == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if n, err := d.oauth.Prune(ctx); err != nil {
		if ctx.Err() == nil {
			d.logger.Warn("pruning OAuth requests and codes failed", "err", err)
		}
	} else if n > 0 {
		d.logger.Debug("pruned OAuth requests and codes", "count", n)
	}
}

// pruneRequests deletes access requests decided or expired a day ago.
func (d *daemon) pruneRequests(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := d.ten.Prune(ctx, d.db.DeleteSetting); err != nil && ctx.Err() == nil {
		d.logger.Warn("pruning access requests failed", "err", err)
	}
}

// publishActivity keeps the dashboard's counts in the store.
func (d *daemon) publishActivity(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := d.board.Publish(ctx, time.Now()); err != nil && ctx.Err() == nil {
		d.logger.Debug("publishing activity counts failed", "err", err)
	}
}

// clusterChanges applies changes made on other nodes (latchkey.ChangeHandler):
// a token is dropped from the cache (the next use reloads it), a block put
// or lifted is read back from the store.
type clusterChanges struct {
	d   *daemon
	ctx context.Context
}

func (c clusterChanges) TokenChanged(id string, version int64) {
	c.d.ver.Changed(id, version)
	c.d.sessions.TokenChanged(id)
}

// SettingChanged: a keyspace, role or identity changed on another node:
// reload them all and drop the verifier's cache, so every token is
// resolved again (the same bound as a revocation).
func (c clusterChanges) SettingChanged(key string) {
	if !tenancy.Affects(key) {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := c.d.ten.Reload(ctx); err != nil && ctx.Err() == nil {
		// Until it reloads, the cache's staleness bound still holds: drop it.
		c.d.ver.Retenant()
		c.d.logger.Warn("reloading keyspaces and roles after a change on another node", "err", err)
	}
}

func (c clusterChanges) BlockChanged(source string) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if err := c.d.blocks.Changed(ctx, source); err != nil && ctx.Err() == nil {
		// The poll comes back to it: the change stays in the log.
		c.d.logger.Warn("reading blocks after a change on another node", "err", err)
	}
}

// redisEpochEvery is how often a node checks that Redis still holds its
// data (checkRedisEpoch).
const redisEpochEvery = 2 * time.Second

// checkRedisEpoch notices a Redis that lost its data: a restart without
// persistence refills every rate-limit bucket (a spent token gets its
// whole limit again) and empties the detector's windows. It cannot undo
// that; it says so, in the log and in latchkey_redis_resets_total
// (docs/operations.md, "Redis settings").
func (d *daemon) checkRedisEpoch(ctx context.Context) {
	reset, err := d.redis.CheckEpoch(ctx)
	if err != nil {
		return // counted by latchkey_redis_up; checked again next time
	}
	if reset {
		d.logger.Warn("redis lost its data (restarted without persistence, failed over, or flushed): rate limits and detector windows started again from zero; see docs/operations.md on Redis persistence")
	}
}

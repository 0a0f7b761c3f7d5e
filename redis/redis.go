// Package redis keeps the counters that must be exact across a cluster of
// latchkey nodes in Redis (github.com/redis/go-redis/v9): per-token rate
// limits (GCRA in a Lua script, one round trip per check) and the
// detector's windows (failures per source, networks per token), so that
// an attacker who spreads requests over the nodes is counted as one.
//
// Times come from the Redis server's clock (TIME inside the scripts), so
// nodes need not agree on the time. A Redis that cannot be reached is
// reported as an error at once for a short while (Client.RetryAfter)
// rather than being waited on by every verification; what the caller does
// then is its policy (verify.Config.SharedFailClosed).
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// ErrDown is returned while Redis is considered unreachable after a
// failure, until the next attempt is due.
var ErrDown = errors.New("redis: unreachable (retrying shortly)")

// Client is a connection pool with latchkey's keys under one prefix.
type Client struct {
	rdb    *goredis.Client
	prefix string
	// Timeout bounds one command (default 250ms): a Redis that hangs costs
	// a verification at most this once per RetryAfter.
	Timeout time.Duration
	// RetryAfter is how long after a failure commands fail at once with
	// ErrDown instead of trying (default 1s).
	RetryAfter time.Duration

	downUntil atomic.Int64 // Unix nanoseconds; 0: up
	failures  atomic.Uint64

	epochMu sync.Mutex
	epoch   string        // the marker last seen (CheckEpoch); "" before the first check
	resets  atomic.Uint64 // times the marker was found gone or changed
}

// CheckEpoch reads the deployment's marker key (<prefix>epoch), writing a
// new random one if there is none, and reports whether it differs from the
// one this client saw last: Redis lost its data (it restarted without
// persistence, failed over to a replica that had not caught up, or was
// flushed), so every rate-limit bucket and detector window started again
// from zero. The first check only learns the marker. Resets counts the
// resets seen.
func (c *Client) CheckEpoch(ctx context.Context) (reset bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	b := make([]byte, 8)
	rand.Read(b)
	key := c.prefix + "epoch"
	if err := c.rdb.SetNX(ctx, key, hex.EncodeToString(b), 0).Err(); err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	cur, err := c.rdb.Get(ctx, key).Result()
	if err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	c.epochMu.Lock()
	defer c.epochMu.Unlock()
	reset = c.epoch != "" && cur != c.epoch
	c.epoch = cur
	if reset {
		c.resets.Add(1)
	}
	return reset, nil
}

// Resets is how many times CheckEpoch found Redis's data lost.
func (c *Client) Resets() uint64 { return c.resets.Load() }

// Open connects to the Redis at url (redis://[user:password@]host:port/db
// or rediss:// for TLS) and checks that it answers. Keys are written under
// prefix (default "latchkey:"), so that several deployments or tests can
// share a server.
func Open(ctx context.Context, url, prefix string) (*Client, error) {
	c, err := New(url, prefix)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.rdb.Ping(pctx).Err(); err != nil {
		c.rdb.Close()
		return nil, fmt.Errorf("redis: cannot reach %s: %w", c.rdb.Options().Addr, err)
	}
	return c, nil
}

// CheckURL checks a Redis URL (redis://, rediss:// or unix://) without
// connecting.
func CheckURL(url string) error {
	_, err := goredis.ParseURL(url) // its errors start "redis: "
	return err
}

// New is Open without the check: the pool connects when first used, so a
// node can start while Redis is down (and count alone until it is back).
func New(url, prefix string) (*Client, error) {
	opt, err := goredis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if prefix == "" {
		prefix = "latchkey:"
	}
	c := &Client{prefix: prefix, Timeout: 250 * time.Millisecond, RetryAfter: time.Second}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = c.Timeout, c.Timeout, c.Timeout
	opt.PoolTimeout = c.Timeout
	opt.MaxRetries = -1 // a failed check falls back at once; the next one reconnects
	opt.ContextTimeoutEnabled = true
	c.rdb = goredis.NewClient(opt)
	return c, nil
}

// quiet drops go-redis's own log lines (a dial failure per attempt, on
// standard error): the client counts failures and latchkey reports them
// through its logs and metrics (latchkey_redis_up).
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func init() { goredis.SetLogger(quiet{}) }

// Close closes the pool.
func (c *Client) Close() error { return c.rdb.Close() }

// Ping checks that Redis answers.
func (c *Client) Ping(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }

// Failures counts commands that failed (Redis unreachable or erroring).
func (c *Client) Failures() uint64 { return c.failures.Load() }

// Up reports whether Redis is believed reachable (no failure in the last
// RetryAfter).
func (c *Client) Up() bool { return time.Now().UnixNano() >= c.downUntil.Load() }

// run executes script, failing fast while Redis is down.
func (c *Client) run(ctx context.Context, s *goredis.Script, keys []string, args ...any) ([]int64, error) {
	if !c.Up() {
		return nil, ErrDown
	}
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	res, err := s.Run(ctx, c.rdb, keys, args...).Int64Slice()
	if err != nil {
		c.failures.Add(1)
		c.downUntil.Store(time.Now().Add(c.RetryAfter).UnixNano())
		return nil, fmt.Errorf("redis: %w", err)
	}
	return res, nil
}

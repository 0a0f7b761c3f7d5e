package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/latchkeyhq/latchkey"
	"github.com/latchkeyhq/latchkey/client"
)

// redisURL returns the test Redis and a key prefix of the test's own,
// whose keys are deleted afterwards.
func redisURL(t *testing.T) (url, prefix string) {
	t.Helper()
	url = os.Getenv("LATCHKEY_TEST_REDIS")
	if url == "" {
		url = "redis://127.0.0.1:6379/0"
	}
	opt, err := goredis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := goredis.NewClient(opt)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		rdb.Close()
		requireService(t, "Redis")
	}
	b := make([]byte, 6)
	rand.Read(b)
	prefix = "lktest:" + hex.EncodeToString(b) + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return url, prefix
}

// cluster starts n in-process nodes on one fresh PostgreSQL schema with
// cfg's settings, and returns a client on each (holding the root token).
func cluster(t *testing.T, n int, cfg serveConfig) []*client.Client {
	t.Helper()
	cfg.Database, cfg.ServerKey, cfg.Listen = pgSchema(t), strings.Repeat("4b", 32), "127.0.0.1:0"
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var nodes []*daemon
	var root string
	for i := range n {
		c := cfg
		c.DataDir, c.Node = t.TempDir(), fmt.Sprintf("node-%d", i)
		d, err := startDaemon(ctx, c, logger, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Shutdown(ctx) })
		if r, err := os.ReadFile(c.DataDir + "/root-token"); err == nil {
			root = strings.TrimSpace(string(r))
		}
		nodes = append(nodes, d)
	}
	var cls []*client.Client
	for _, d := range nodes {
		if d.feed != nil {
			waitFor(t, follower(d).Listening)
		}
		cls = append(cls, &client.Client{BaseURL: "http://" + d.addr, Token: root})
	}
	return cls
}

// validAcross verifies tok n times, round robin over the nodes, and
// counts the VALID answers.
func validAcross(t *testing.T, cls []*client.Client, tok string, n int) int {
	t.Helper()
	valid := 0
	for i := range n {
		v, err := cls[i%len(cls)].Verify(ctx, client.VerifyRequest{Token: tok})
		if err != nil {
			t.Fatalf("verify on node %d: %v", i%len(cls), err)
		}
		if v.Valid {
			valid++
		} else if v.Code != latchkey.RateLimited {
			t.Fatalf("verify on node %d: %s", i%len(cls), v.Code)
		}
	}
	return valid
}

// With Redis, three nodes enforce one rate limit exactly, block a source
// whose failures are spread over them, and suspend a token used from too
// many networks through different nodes. Without it, each node counts
// alone (the documented fallback).
func TestClusterRedisSharedCounters(t *testing.T) {
	t.Parallel()
	url, prefix := redisURL(t)
	cls := cluster(t, 3, serveConfig{Redis: url, RedisPrefix: prefix, Poll: 200 * time.Millisecond})
	rl := &client.RateRequest{Limit: 10, Window: "1m"}
	tok, err := cls[0].CreateToken(ctx, client.CreateRequest{RateLimit: rl})
	if err != nil {
		t.Fatal(err)
	}
	if n := validAcross(t, cls, tok.Plaintext, 30); n != 10 {
		t.Errorf("a 10/min token verified %d times over three nodes with Redis, want exactly 10", n)
	}

	// 7 failures per node (21 in all; threshold 20): no node alone would
	// block, the cluster does, on every node.
	const attacker = "203.0.113.77"
	for i := range 21 {
		cls[i%3].Verify(ctx, client.VerifyRequest{Token: "lk_made_up", IP: attacker})
	}
	for i := range cls {
		waitFor(t, func() bool {
			v, err := cls[i].Verify(ctx, client.VerifyRequest{Token: tok.Plaintext, IP: attacker})
			return err == nil && v.Code == latchkey.Blocked
		})
	}

	// A token used from 12 networks, 4 per node (threshold 10): suspended.
	spread, err := cls[0].CreateToken(ctx, client.CreateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		if v, _ := cls[i%3].Verify(ctx, client.VerifyRequest{Token: spread.Plaintext, IP: fmt.Sprintf("10.%d.0.1", i)}); !v.Valid {
			t.Fatalf("use %d: %s", i, v.Code)
		}
	}
	waitFor(t, func() bool {
		v, err := cls[2].Verify(ctx, client.VerifyRequest{Token: spread.Plaintext})
		return err == nil && v.Code == latchkey.Suspended
	})

	// Without Redis: each node has the whole limit.
	local := cluster(t, 2, serveConfig{})
	tok2, err := local[0].CreateToken(ctx, client.CreateRequest{RateLimit: rl})
	if err != nil {
		t.Fatal(err)
	}
	if n := validAcross(t, local, tok2.Plaintext, 30); n != 20 {
		t.Errorf("without Redis, two nodes allowed %d of a 10/min limit; the documented behaviour is 10 per node (20)", n)
	}
}

// Redis unreachable: by default each node enforces rate limits alone;
// with --redis-failure closed, rate-limited tokens are refused (503) while
// tokens without a rate limit are unaffected.
func TestClusterRedisDownPolicy(t *testing.T) {
	t.Parallel()
	dead := "redis://" + freeAddr(t) + "/0" // nothing listens there
	for _, closed := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail-closed=%v", closed), func(t *testing.T) {
			cls := cluster(t, 1, serveConfig{Redis: dead, RedisFailClosed: closed})
			tok, err := cls[0].CreateToken(ctx, client.CreateRequest{RateLimit: &client.RateRequest{Limit: 3, Window: "1m"}})
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := cls[0].CreateToken(ctx, client.CreateRequest{})
			if v, err := cls[0].Verify(ctx, client.VerifyRequest{Token: plain.Plaintext}); err != nil || !v.Valid {
				t.Errorf("a token without a rate limit: %+v %v", v, err)
			}
			if closed {
				v, err := cls[0].Verify(ctx, client.VerifyRequest{Token: tok.Plaintext})
				if latchkey.ErrorCode(err) != latchkey.EUnavailable {
					t.Errorf("fail closed: %+v %v, want 503", v, err)
				}
				return
			}
			if n := validAcross(t, cls, tok.Plaintext, 6); n != 3 {
				t.Errorf("node-local fallback allowed %d of a 3/min limit, want 3", n)
			}
		})
	}
}

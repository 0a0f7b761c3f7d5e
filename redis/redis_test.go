package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/latchkeyhq/latchkey"
)

// testURL is the shared Redis the tests use (LATCHKEY_TEST_REDIS).
func testURL() string {
	if u := os.Getenv("LATCHKEY_TEST_REDIS"); u != "" {
		return u
	}
	return "redis://127.0.0.1:6379/0"
}

func requireRedis(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("LATCHKEY_REQUIRE_INTEGRATION") == "1" {
		t.Fatalf("Redis is required (LATCHKEY_REQUIRE_INTEGRATION=1) but not available: %v", err)
	}
	t.Skipf("Redis is not available: %v; skipping (set LATCHKEY_REQUIRE_INTEGRATION=1 to make this a failure)", err)
}

// open returns a client on the shared Redis with keys under a prefix of
// the test's own, deleted afterwards.
func open(t *testing.T, prefix string) *Client {
	t.Helper()
	c, err := Open(context.Background(), testURL(), prefix)
	if err != nil {
		requireRedis(t, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		iter := c.rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.rdb.Del(ctx, iter.Val())
		}
		c.Close()
	})
	return c
}

func testPrefix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "lktest:" + hex.EncodeToString(b) + ":"
}

// Two nodes share one limit exactly, also when they spend at once.
func TestSharedRateLimitExact(t *testing.T) {
	prefix := testPrefix()
	a, b := open(t, prefix), open(t, prefix)
	ctx := context.Background()
	r := latchkey.RateLimit{Limit: 10, Window: latchkey.Duration(time.Minute)}
	key := a.RateKey("series1", r)
	if key != b.RateKey("series1", r) {
		t.Fatal("two nodes name one limit differently")
	}
	allowed := 0
	var last latchkey.RateStatus
	for i := range 15 {
		ok, st, err := []*Client{a, b}[i%2].Allow(ctx, key, r, true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
			if want := int64(10 - allowed); st.Remaining != want {
				t.Errorf("after %d allowed, remaining %d, want %d", allowed, st.Remaining, want)
			}
		}
		last = st
	}
	if allowed != 10 {
		t.Errorf("%d allowed across two nodes, want 10", allowed)
	}
	if last.RetryAfter <= 5*time.Second || last.RetryAfter > 6*time.Second {
		t.Errorf("retry after %v, want about 6s (one interval of 1m/10)", last.RetryAfter)
	}
	if last.Limit != 10 || last.Remaining != 0 {
		t.Errorf("refused status %+v", last)
	}
	// Looking does not spend.
	ok, _, err := a.Allow(ctx, a.RateKey("series2", r), r, false)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	for range 10 {
		if ok, _, _ := b.Allow(ctx, a.RateKey("series2", r), r, true); !ok {
			t.Fatal("a look spent from the limit")
		}
	}

	// Concurrent spending from two clients: exactly the limit.
	big := latchkey.RateLimit{Limit: 100, Window: latchkey.Duration(time.Hour)}
	k := a.RateKey("series3", big)
	var n atomic.Int64
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			c := []*Client{a, b}[w%2]
			for range 30 {
				if ok, _, err := c.Allow(ctx, k, big, true); err == nil && ok {
					n.Add(1)
				} else if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n.Load() != 100 {
		t.Errorf("%d of 240 concurrent requests allowed, want exactly 100", n.Load())
	}
	// The state expires once the bucket would be full again.
	ttl, err := a.rdb.PTTL(ctx, k).Result()
	if err != nil || ttl <= 0 || ttl > time.Hour+time.Second {
		t.Errorf("limiter key TTL %v %v", ttl, err)
	}
}

// The rate refills at limit per window, and a limit changed is a fresh
// state.
func TestSharedRateLimitRefills(t *testing.T) {
	c := open(t, testPrefix())
	ctx := context.Background()
	r := latchkey.RateLimit{Limit: 5, Window: latchkey.Duration(500 * time.Millisecond)}
	k := c.RateKey("s", r)
	for range 5 {
		if ok, _, _ := c.Allow(ctx, k, r, true); !ok {
			t.Fatal("refused within the limit")
		}
	}
	ok, st, _ := c.Allow(ctx, k, r, true)
	if ok {
		t.Fatal("allowed past the limit")
	}
	time.Sleep(st.RetryAfter + 10*time.Millisecond)
	if ok, _, _ := c.Allow(ctx, k, r, true); !ok {
		t.Errorf("refused after waiting the retry-after (%v)", st.RetryAfter)
	}
	r2 := latchkey.RateLimit{Limit: 6, Window: r.Window}
	if c.RateKey("s", r2) == k {
		t.Error("a changed limit shares the old state")
	}
}

// privateRedis runs a redis-server of the test's own, which it can stop.
type privateRedis struct {
	t    *testing.T
	port string
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T, port string) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		requireRedis(t, err)
	}
	if port == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &privateRedis{t: t, port: port, cmd: cmd}
	t.Cleanup(p.stop)
	rdb := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + port})
	defer rdb.Close()
	for deadline := time.Now().Add(10 * time.Second); rdb.Ping(context.Background()).Err() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p
}

func (p *privateRedis) url() string { return "redis://127.0.0.1:" + p.port + "/0" }

// openPrivate starts a private Redis and a client on it that, after a
// failure, fails at once for 300 ms.
func openPrivate(t *testing.T) (*privateRedis, *Client) {
	t.Helper()
	srv := startPrivateRedis(t, "")
	c, err := Open(context.Background(), srv.url(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.RetryAfter = 300 * time.Millisecond
	return srv, c
}

func (p *privateRedis) stop() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
}

// Redis going away: the check fails (it is the caller's policy what
// follows), later checks fail at once instead of waiting on Redis each
// time, and the client recovers by itself when Redis is back.
func TestRedisDown(t *testing.T) {
	srv, c := openPrivate(t)
	ctx := context.Background()
	r := latchkey.RateLimit{Limit: 3, Window: latchkey.Duration(time.Hour)}
	k := c.RateKey("s", r)
	if ok, _, err := c.Allow(ctx, k, r, true); err != nil || !ok {
		t.Fatal(ok, err)
	}
	srv.stop()
	if _, _, err := c.Allow(ctx, k, r, true); err == nil {
		t.Fatal("no error with Redis gone")
	}
	if c.Up() {
		t.Error("Up after a failure")
	}
	start := time.Now()
	for range 100 {
		if _, _, err := c.Allow(ctx, k, r, true); err != ErrDown {
			t.Fatalf("while down: %v, want ErrDown", err)
		}
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("100 checks while Redis is down took %v: they should fail at once", took)
	}
	if c.Failures() == 0 {
		t.Error("failure not counted")
	}
	startPrivateRedis(t, srv.port) // back, empty
	time.Sleep(c.RetryAfter)
	waitUntil(t, func() bool { _, _, err := c.Allow(ctx, k, r, true); return err == nil })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func BenchmarkSharedAllow(b *testing.B) {
	c, err := Open(context.Background(), testURL(), testPrefix())
	if err != nil {
		b.Skip(err)
	}
	defer c.Close()
	r := latchkey.RateLimit{Limit: 1 << 40, Window: latchkey.Duration(time.Hour)}
	k := c.RateKey("bench", r)
	defer c.rdb.Del(context.Background(), k)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := c.Allow(context.Background(), k, r, true); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The detector's windows: failures from one source summed over nodes,
// with exactly one caller told to act; distinct networks per token.
func TestSharedDetectorWindows(t *testing.T) {
	prefix := testPrefix()
	a, b := open(t, prefix), open(t, prefix)
	ctx := context.Background()
	fires := 0
	var total int64
	for i := range 25 {
		n, fire, err := []*Client{a, b}[i%2].AddFailures(ctx, "203.0.113.9", 1, time.Minute, 20)
		if err != nil {
			t.Fatal(err)
		}
		if fire {
			fires++
			if n != 20 {
				t.Errorf("fired at %d failures, want 20", n)
			}
		}
		total = n
	}
	if fires != 1 || total != 25 {
		t.Errorf("%d fires, total %d; want 1 and 25", fires, total)
	}
	if n, _, _ := a.AddFailures(ctx, "2001:db8::/64", 3, time.Minute, 20); n != 3 {
		t.Errorf("another source starts at %d", n)
	}
	// The window slides: failures older than it are not counted.
	for range 5 {
		a.AddFailures(ctx, "198.51.100.1", 1, 200*time.Millisecond, 20)
	}
	time.Sleep(250 * time.Millisecond)
	if n, _, _ := a.AddFailures(ctx, "198.51.100.1", 1, 200*time.Millisecond, 20); n != 1 {
		t.Errorf("after the window passed, %d failures counted, want 1", n)
	}

	const tok = "AAAAAAAAAAAAAAAC"
	fires = 0
	for i := range 12 {
		nets := []string{"10." + strconv.Itoa(i) + ".0.0/24", "10.0.0.0/24"} // the second is seen every time
		n, fire, err := []*Client{a, b}[i%2].AddNetworks(ctx, tok, nets, time.Minute, 10)
		if err != nil {
			t.Fatal(err)
		}
		if fire {
			fires++
		}
		if want := int64(i + 1); n != want {
			t.Errorf("after %d calls, %d distinct networks, want %d", i+1, n, want)
		}
	}
	if fires != 1 {
		t.Errorf("network spread fired %d times, want 1", fires)
	}
	if nets, err := b.Networks(ctx, tok); err != nil || len(nets) != 12 {
		t.Errorf("networks: %d %v", len(nets), err)
	}
}

// BenchmarkPing is the baseline for BenchmarkSharedAllow: one round trip
// to the same Redis doing nothing.
func BenchmarkPing(b *testing.B) {
	c, err := Open(context.Background(), testURL(), testPrefix())
	if err != nil {
		b.Skip(err)
	}
	defer c.Close()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := c.Ping(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A Redis restarted without persistence has lost every bucket (a spent
// limit is whole again): the client cannot undo that, but it notices, so
// the node can say so (latchkey_redis_resets_total).
func TestRedisRestartNoticed(t *testing.T) {
	srv, c := openPrivate(t)
	ctx := context.Background()
	r := latchkey.RateLimit{Limit: 2, Window: latchkey.Duration(time.Hour)}
	key := c.RateKey("restart-series", r)
	for i := range 3 {
		ok, _, err := c.Allow(ctx, key, r, true)
		if err != nil || ok != (i < 2) {
			t.Fatalf("attempt %d: %v %v", i, ok, err)
		}
	}
	for range 2 {
		if reset, err := c.CheckEpoch(ctx); err != nil || reset {
			t.Fatalf("before the restart: reset %v, %v", reset, err)
		}
	}
	srv.stop()
	srv = startPrivateRedis(t, srv.port)
	var reset bool
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if reset, err = c.CheckEpoch(ctx); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the client skips Redis for RetryAfter after a failure
	}
	if err != nil || !reset || c.Resets() != 1 {
		t.Fatalf("after a restart without persistence: reset %v, resets %d, %v", reset, c.Resets(), err)
	}
	if ok, _, err := c.Allow(ctx, key, r, true); err != nil || !ok {
		t.Fatalf("the spent limit after the restart: %v %v (the test assumes the bucket was lost)", ok, err)
	}
	if reset, err := c.CheckEpoch(ctx); err != nil || reset || c.Resets() != 1 {
		t.Errorf("the next check: reset %v, resets %d, %v", reset, c.Resets(), err)
	}
}

// A frozen Redis (the process stopped, its connections open, nothing
// answered) costs a check at most the command timeout once, then checks
// fail at once until the retry pause is over; the client is back when
// Redis is.
func TestRedisFrozen(t *testing.T) {
	srv, c := openPrivate(t)
	ctx := context.Background()
	r := latchkey.RateLimit{Limit: 100, Window: latchkey.Duration(time.Hour)}
	k := c.RateKey("frozen", r)
	if ok, _, err := c.Allow(ctx, k, r, true); err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer srv.cmd.Process.Signal(syscall.SIGCONT)
	start := time.Now()
	if _, _, err := c.Allow(ctx, k, r, true); err == nil {
		t.Fatal("a check answered by a frozen Redis")
	}
	if took := time.Since(start); took > c.Timeout+250*time.Millisecond {
		t.Errorf("the first check against a frozen Redis took %v; the timeout is %v", took, c.Timeout)
	}
	start = time.Now()
	for range 100 {
		if _, _, err := c.Allow(ctx, k, r, true); err != ErrDown {
			t.Fatalf("while frozen: %v, want ErrDown", err)
		}
		if _, _, err := c.AddFailures(ctx, "192.0.2.1", 1, time.Minute, 20); err != ErrDown {
			t.Fatalf("a detector count while frozen: %v, want ErrDown", err)
		}
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("200 calls while Redis is frozen took %v: they should fail at once", took)
	}
	srv.cmd.Process.Signal(syscall.SIGCONT)
	waitUntil(t, func() bool { _, _, err := c.Allow(ctx, k, r, true); return err == nil })
}

package redis

import (
	"context"
	"strconv"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/latchkeyhq/latchkey"
)

// gcra is the generic cell rate algorithm of ratelimit.Limiter, run inside
// Redis so that every node spends from one state. The state is the
// theoretical arrival time in microseconds of the server's clock; it
// expires once the bucket is full again.
//
// KEYS[1] the limiter; ARGV[1] microseconds one request costs, ARGV[2] the
// window (cost × limit), ARGV[3] "1" to spend, "0" to only look.
// Returns {allowed, tat after the call, now}.
var gcra = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local iv = tonumber(ARGV[1])
local win = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + iv
if nxt - now > win then
  return {0, tat, now}
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
  return {1, nxt, now}
end
return {1, tat, now}
`)

// RateKey is the key of a rate limit: the token's rotation series and
// the limit itself, so that changing a limit starts a fresh state.
func (c *Client) RateKey(series string, r latchkey.RateLimit) string {
	return c.prefix + "rl:" + series + ":" + strconv.FormatInt(r.Limit, 10) + ":" + strconv.FormatInt(int64(r.Window), 10)
}

// Allow spends one request from the limit r kept under key (from
// RateKey), or with spend false only reports whether one would be
// allowed. It is one round trip.
func (c *Client) Allow(ctx context.Context, key string, r latchkey.RateLimit, spend bool) (bool, latchkey.RateStatus, error) {
	iv := max(1, r.Interval().Microseconds())
	win := iv * r.Limit
	sp := "0"
	if spend {
		sp = "1"
	}
	res, err := c.run(ctx, gcra, []string{key}, iv, win, sp)
	if err != nil {
		return false, latchkey.RateStatus{}, err
	}
	if len(res) != 3 {
		return false, latchkey.RateStatus{}, ErrDown
	}
	ok, tat, now := res[0] == 1, res[1], res[2]
	st := latchkey.RateStatus{Limit: r.Limit, Reset: tat * int64(time.Microsecond)}
	if !ok {
		st.RetryAfter = time.Duration(tat+iv-win-now) * time.Microsecond
		return false, st, nil
	}
	st.Remaining = max(0, (win-(tat-now))/iv)
	if !spend {
		st.Remaining = max(0, st.Remaining-1)
	}
	return true, st, nil
}

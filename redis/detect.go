package redis

import (
	"context"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// failures counts failed attempts from one source in a sliding window of
// ten buckets (so the window is counted to a tenth of its length). The
// call that first brings the total to the threshold in a window is told to
// act (fire); the others, on any node, are not, so one node blocks the
// source and the store tells the rest.
//
// KEYS[1] the source's base key (hash-tagged, so its buckets share a
// slot); ARGV[1] failures to add, ARGV[2] window in ms, ARGV[3] threshold.
// Returns {total in the window, fire}.
var failures = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[2])
local bw = math.max(1, math.ceil(w / 10))
local b = math.floor(now / bw)
local k = KEYS[1] .. ':' .. b
redis.call('INCRBY', k, ARGV[1])
redis.call('PEXPIRE', k, w + bw)
local keys = {}
for i = b - 9, b do keys[#keys + 1] = KEYS[1] .. ':' .. i end
local total = 0
for _, v in ipairs(redis.call('MGET', unpack(keys))) do
  if v then total = total + tonumber(v) end
end
local fire = 0
if total >= tonumber(ARGV[3]) and redis.call('SET', KEYS[1] .. ':fired', '1', 'NX', 'PX', w) then
  fire = 1
end
return {total, fire}
`)

// networks records the networks one token was used from, scored by time,
// and counts the distinct ones in the window. At most 1000 are kept (the
// rule's threshold is far below). KEYS[1] the token's set; ARGV[1] window
// in ms, ARGV[2] threshold, ARGV[3...] networks. Returns {distinct, fire}.
var networks = goredis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - w)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -1001)
redis.call('PEXPIRE', KEYS[1], w)
local n = redis.call('ZCARD', KEYS[1])
local fire = 0
if n >= tonumber(ARGV[2]) and redis.call('SET', KEYS[1] .. ':fired', '1', 'NX', 'PX', w) then
  fire = 1
end
return {n, fire}
`)

// AddFailures adds n failed attempts from source (as detect.SourceString
// writes it) to its window w, and reports the total across all nodes and
// whether this call is the one that should act on reaching threshold.
func (c *Client) AddFailures(ctx context.Context, source string, n int64, w time.Duration, threshold int) (int64, bool, error) {
	res, err := c.run(ctx, failures, []string{c.prefix + "df:{" + source + "}"}, n, max(1, w.Milliseconds()), threshold)
	if err != nil {
		return 0, false, err
	}
	if len(res) != 2 {
		return 0, false, ErrDown
	}
	return res[0], res[1] == 1, nil
}

// AddNetworks records that token was used from nets (/24 or /48 networks)
// and reports how many distinct networks used it within w across all
// nodes, and whether this call is the one that should act on reaching
// threshold.
func (c *Client) AddNetworks(ctx context.Context, token string, nets []string, w time.Duration, threshold int) (int64, bool, error) {
	args := make([]any, 0, 2+len(nets))
	args = append(args, max(1, w.Milliseconds()), threshold)
	for _, n := range nets {
		args = append(args, n)
	}
	res, err := c.run(ctx, networks, []string{c.prefix + "dn:{" + token + "}"}, args...)
	if err != nil {
		return 0, false, err
	}
	if len(res) != 2 {
		return 0, false, ErrDown
	}
	return res[0], res[1] == 1, nil
}

// Networks lists the networks token was used from in its current window.
func (c *Client) Networks(ctx context.Context, token string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	return c.rdb.ZRange(ctx, c.prefix+"dn:{"+token+"}", 0, -1).Result()
}

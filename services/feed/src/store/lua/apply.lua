-- Applies feed-log events to one feed's read model, if its applied watermark is still the
-- one the caller read (so concurrent projectors apply each event once, in order).
-- KEYS: the feed's sorted set (activity ids scored by sequence number), the watermark, the
-- last sequence number (never reset).
-- ARGV: expected watermark ('' for none yet), new watermark '<offset>:<epoch>', how many
-- entries the feed keeps, '1' to clear the feed first, then pairs: '+' or '-', activity id.
-- Replies 'ok' or 'conflict'.
local current = redis.call('GET', KEYS[2]) or ''
if current ~= ARGV[1] then
  return 'conflict'
end
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[1])
end
-- Trimmed on each add, so the entries never depend on how the events were batched.
local keep = tonumber(ARGV[3])
local size = redis.call('ZCARD', KEYS[1])
for i = 5, #ARGV, 2 do
  if ARGV[i] == '+' then
    size = size + redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), ARGV[i + 1])
    if size > keep then
      redis.call('ZREMRANGEBYRANK', KEYS[1], 0, size - keep - 1)
      size = keep
    end
  else
    size = size - redis.call('ZREM', KEYS[1], ARGV[i + 1])
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return 'ok'

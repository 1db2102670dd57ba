-- Depth, oldest age and dead letters of a queue for one group.
-- ARGV: group. Returns {ready, in flight, retrying, oldest age in ms or -1, dead}.
local stream, retrying, dead = KEYS[1], KEYS[2], KEYS[3]
local group = ARGV[1]
local now = now_ms()
local ready, in_flight, oldest = 0, 0, nil

local function consider(enqueued_at)
  local at = tonumber(enqueued_at)
  if at ~= nil and (oldest == nil or at < oldest) then
    oldest = at
  end
end
local function consider_first(range)
  if range[1] ~= nil then
    consider(fields_of(range[1][2])['enqueued_at'])
  end
end

if redis.call('EXISTS', stream) == 1 then
  local info = nil
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local candidate = fields_of(raw)
    if candidate['name'] == group then
      info = candidate
    end
  end
  if info == nil then
    ready = redis.call('XLEN', stream)
    consider_first(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1))
  else
    in_flight = tonumber(info['pending'])
    local after = '(' .. info['last-delivered-id']
    if info['lag'] then
      ready = tonumber(info['lag'])
    else
      ready = #redis.call('XRANGE', stream, after, '+')
    end
    consider_first(redis.call('XRANGE', stream, after, '+', 'COUNT', 1))
    if in_flight > 0 then
      local first = redis.call('XPENDING', stream, group)[2]
      consider_first(redis.call('XRANGE', stream, first, first))
    end
  end
end

-- The retry set is ordered by due time, not age: the first 100 stand for all of it.
for _, member in ipairs(redis.call('ZRANGE', retrying, 0, 99)) do
  consider(cmsgpack.unpack(member)['enqueued_at'])
end

local age = -1
if oldest ~= nil then
  age = math.max(0, now - oldest)
end
return { ready, in_flight, redis.call('ZCARD', retrying), age, redis.call('XLEN', dead) }

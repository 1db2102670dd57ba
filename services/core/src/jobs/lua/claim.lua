-- Hands up to `max` jobs to one consumer of a group, creating the group on first use:
-- 1. retries whose backoff elapsed move from the group's retry set back into the stream,
--    addressed to this group only (atomically: two consumers never both move one);
-- 2. entries of other consumers idle for the visibility timeout are reclaimed (XAUTOCLAIM),
--    as their next attempt, or dead-lettered if that attempt is beyond the maximum;
-- 3. new entries are read (XREADGROUP); retries addressed to another group are acked
--    and skipped.
-- ARGV: group, consumer, max (>= 1), visibility timeout in ms, max attempts.
-- Returns {entry id, job id, payload, attempt, enqueued_at, last error or nil, delivery number}
-- per job (the delivery number counts this entry's deliveries: 1, then +1 per reclaim).
local stream, retrying, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer = ARGV[1], ARGV[2]
local max, visibility, max_attempts = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = now_ms()

local created = redis.pcall('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
if type(created) == 'table' and created['err'] and not string.find(created['err'], 'BUSYGROUP', 1, true) then
  return redis.error_reply(created['err'])
end

for _, member in ipairs(redis.call('ZRANGEBYSCORE', retrying, '-inf', now, 'LIMIT', 0, 100)) do
  local job = cmsgpack.unpack(member)
  redis.call('XADD', stream, '*', 'id', job['id'], 'payload', job['payload'], 'attempt', job['attempt'],
    'enqueued_at', job['enqueued_at'], 'error', job['error'], 'group', group)
  redis.call('ZREM', retrying, member)
end

local deliveries = {}
local function deliver(entry_id, fields, attempt, number)
  deliveries[#deliveries + 1] =
    { entry_id, fields['id'], fields['payload'], attempt, fields['enqueued_at'], fields['error'] or false, number }
end
local function addressed_elsewhere(fields)
  return fields['group'] ~= nil and fields['group'] ~= group
end

local reclaimed = redis.call('XAUTOCLAIM', stream, group, consumer, visibility, '0-0', 'COUNT', max)
for _, entry in ipairs(reclaimed[2]) do
  -- Entries trimmed meanwhile come back without fields (Redis 6.2) or not at all (7.0).
  if type(entry) == 'table' and type(entry[2]) == 'table' then
    local entry_id, fields = entry[1], fields_of(entry[2])
    local deliveries_so_far = redis.call('XPENDING', stream, group, entry_id, entry_id, 1)[1][4]
    local attempt = tonumber(fields['attempt']) + deliveries_so_far - 1
    if addressed_elsewhere(fields) then
      redis.call('XACK', stream, group, entry_id)
    elseif attempt > max_attempts then
      redis.call('XACK', stream, group, entry_id)
      dead_letter(dead, fields, group, attempt - 1,
        'attempt ' .. (attempt - 1) .. ' was not acknowledged within the visibility timeout', now)
    else
      deliver(entry_id, fields, attempt, deliveries_so_far)
    end
  end
end

while #deliveries < max do
  local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', max - #deliveries, 'STREAMS', stream, '>')
  if not read then
    break
  end
  for _, entry in ipairs(read[1][2]) do
    local fields = fields_of(entry[2])
    if addressed_elsewhere(fields) then
      redis.call('XACK', stream, group, entry[1])
    else
      deliver(entry[1], fields, tonumber(fields['attempt']), 1)
    end
  end
end
return deliveries

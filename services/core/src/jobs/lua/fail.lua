-- Records a failed attempt of an entry this consumer still holds under the same delivery:
-- acks it and either puts the job in the group's retry set, due after the backoff, or
-- dead-letters it.
-- ARGV: group, consumer, entry id, error, attempt that failed, max attempts, backoff in ms,
-- delivery number.
-- Returns {'retry', next attempt}, {'dead', attempts} or {'stale', 0}.
local stream, retrying, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, entry_id, error = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local attempt, max_attempts, delay = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])

local held = redis.pcall('XPENDING', stream, group, entry_id, entry_id, 1, consumer)
if held['err'] ~= nil or #held == 0 or held[1][4] ~= tonumber(ARGV[8]) then
  return { 'stale', 0 }
end
local range = redis.call('XRANGE', stream, entry_id, entry_id)
redis.call('XACK', stream, group, entry_id)
if #range == 0 then
  return { 'stale', 0 }
end

local fields = fields_of(range[1][2])
local now = now_ms()
local outcome
if attempt >= max_attempts then
  dead_letter(dead, fields, group, attempt, error, now)
  outcome = { 'dead', attempt }
else
  local job = cmsgpack.pack({ entry = entry_id, id = fields['id'], payload = fields['payload'], attempt = attempt + 1,
    enqueued_at = fields['enqueued_at'], error = error })
  redis.call('ZADD', retrying, now + delay, job)
  outcome = { 'retry', attempt + 1 }
end
trim(stream)
return outcome

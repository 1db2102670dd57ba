-- Shared by every job queue script (prepended to each). All keys of one queue share the
-- hash tag {<queue>}: KEYS[1] is the stream, KEYS[2] the group's retry set, KEYS[3] the
-- dead-letter stream.

-- Milliseconds since the epoch, by the Redis server's clock.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- A stream entry's flat field list as a table.
local function fields_of(flat)
  local fields = {}
  for i = 1, #flat, 2 do
    fields[flat[i]] = flat[i + 1]
  end
  return fields
end

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function id_less(a, b)
  local a_ms, a_seq = parse_id(a)
  local b_ms, b_seq = parse_id(b)
  if a_ms ~= b_ms then
    return a_ms < b_ms
  end
  return a_seq < b_seq
end

-- Appends a job that used up its attempts to the dead-letter stream.
local function dead_letter(dead, fields, group, attempts, error, now)
  redis.call('XADD', dead, '*', 'id', fields['id'], 'payload', fields['payload'], 'attempts', attempts,
    'error', error, 'group', group, 'enqueued_at', fields['enqueued_at'], 'dead_at', now)
end

-- Drops the entries every group is done with: below each group's oldest pending entry and
-- at or below its last delivered id. Entries no group has read yet stay.
local function trim(stream)
  local keep_from = nil
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local group = fields_of(raw)
    local bound
    if tonumber(group['pending']) > 0 then
      bound = redis.call('XPENDING', stream, group['name'])[2]
    else
      local ms, seq = parse_id(group['last-delivered-id'])
      bound = string.format('%d-%d', ms, seq + 1)
    end
    if keep_from == nil or id_less(bound, keep_from) then
      keep_from = bound
    end
  end
  if keep_from ~= nil then
    redis.call('XTRIM', stream, 'MINID', keep_from)
  end
end

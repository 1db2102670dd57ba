-- KEYS: user index. ARGV: user, now, session key prefix, page size + 1, highest score
-- ('+inf' or the cursor's), cursor id ('' for none). Replies the live sessions after the
-- cursor, newest first, as {id, version, attributes, create, update, expire, max_expire}
-- rows, and drops dead ids from the index. The session hashes are not in KEYS (they are
-- found through the index) but carry the index's hash tag, so they live on its slot.
local index, user, now, prefix = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local wanted, max_score, after_id = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local rows, dead, offset = {}, {}, 0
while #rows < wanted do
  local batch = redis.call('ZREVRANGEBYSCORE', index, max_score, '-inf', 'WITHSCORES', 'LIMIT', offset, 64)
  if #batch == 0 then
    break
  end
  offset = offset + #batch / 2
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    if after_id == '' or tonumber(score) < tonumber(max_score) or id < after_id then
      local session = load_live(prefix .. id, user, now)
      if session == nil then
        table.insert(dead, id)
      elseif #rows < wanted then
        table.insert(rows, { id, session.version, session.attributes, session.create, session.update,
          session.expire, session.max_expire })
      end
    end
  end
end
if #dead > 0 then
  redis.call('ZREM', index, unpack(dead))
end
return rows

-- Acknowledges entries for a group and trims what every group is done with.
-- ARGV: group, entry id, more entry ids. Returns how many of them were pending.
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
if type(acked) == 'table' then
  -- The stream or group is gone (e.g. a fresh Redis): nothing left to acknowledge.
  return 0
end
if acked > 0 then
  trim(KEYS[1])
end
return acked

-- Acknowledges one entry for a group and trims what every group is done with.
-- ARGV: group, entry id. Returns 1 if it was pending, 0 otherwise.
local acked = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(acked) == 'table' then
  -- The stream or group is gone (e.g. a fresh Redis): nothing left to acknowledge.
  return 0
end
if acked == 1 then
  trim(KEYS[1])
end
return acked

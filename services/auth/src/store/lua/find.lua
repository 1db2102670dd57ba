-- The record of a live (unconsumed, unexpired) token. ARGV: hash, now (ms).
local record = load(ARGV[1], tonumber(ARGV[2]))
if record == nil or record.state ~= 'live' then
  return invalid()
end
return reply('live', record)

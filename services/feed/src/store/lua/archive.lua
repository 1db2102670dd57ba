-- Archives a batch of feed-log events of one tenant, first write wins: an event whose id is
-- already archived is left as it is, and only a newly archived event is added to its feeds,
-- so the feed sets always agree with the records (see store/archive.rs).
-- KEYS: the events hash (event id -> record), the set of feed names, then one set of event
-- ids per feed of the batch.
-- ARGV: the name of each of those feeds (in KEYS order), then per event: its id, its record,
-- how many feeds it is in (n), and n indexes into the feeds (1 = the first feed).
-- Replies how many events were newly archived.
local feeds = #KEYS - 2
local added = 0
local i = feeds + 1
while i <= #ARGV do
  local id, record, count = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if redis.call('HSETNX', KEYS[1], id, record) == 1 then
    added = added + 1
    for j = 1, count do
      local feed = tonumber(ARGV[i + 2 + j])
      redis.call('SADD', KEYS[2 + feed], id)
      redis.call('SADD', KEYS[2], ARGV[feed])
    end
  end
  i = i + 3 + count
end
return added

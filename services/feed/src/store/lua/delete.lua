-- Deletes an activity, appends its tombstone to the global and the actor's channel and
-- enqueues its feed job, in one step (mesh_publish and mesh_enqueue_job are prepended).
-- KEYS: record, global meta, global log, actor meta, actor log, feed job stream. ARGV: the
-- record's actor (read before), deleter, '1' if the deleter is an admin, tombstone payload,
-- global pub/sub channel, global candidate epoch, actor pub/sub channel, actor candidate
-- epoch, history size, history TTL (s), job id, tenant.
-- Replies {'missing'}, {'denied'} or {'ok', '<g offset>:<g epoch>:<a offset>:<a epoch>'}.
local record = redis.call('GET', KEYS[1])
if not record then
  return {'missing'}
end
local actor = cjson.decode(record).actor
if actor ~= ARGV[1] then
  -- Not the record read before (ids are never reused): treat it as gone.
  return {'missing'}
end
if actor ~= ARGV[2] and ARGV[3] ~= '1' then
  return {'denied'}
end
redis.call('DEL', KEYS[1])
local g = mesh_publish(KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[4], ARGV[9], ARGV[10])
local a = mesh_publish(KEYS[4], KEYS[5], ARGV[7], ARGV[8], ARGV[4], ARGV[9], ARGV[10])
local positions = g[1] .. ':' .. g[2] .. ':' .. a[1] .. ':' .. a[2]
-- The job's payload as mesh_feed::projection::FeedJob reads it.
mesh_enqueue_job(KEYS[6], ARGV[11], ARGV[12] .. '\n' .. positions .. '\n' .. ARGV[4])
return {'ok', positions}

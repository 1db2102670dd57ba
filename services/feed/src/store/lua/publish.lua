-- Stores an activity, appends its event to the global and the actor's channel and enqueues
-- its feed job, in one step (mesh_publish and mesh_enqueue_job are prepended). KEYS:
-- record, request (the record key again when there is no request id), global meta, global
-- log, actor meta, actor log, feed job stream. ARGV: record JSON, event payload, global
-- pub/sub channel, global candidate epoch, actor pub/sub channel, actor candidate epoch,
-- history size, history TTL (s), request TTL (s, '' for none), job id, tenant.
-- Replies {'ok'|'first', '<g offset>:<g epoch>:<a offset>:<a epoch>\n<record JSON>'}.
local with_request = ARGV[9] ~= ''
if with_request then
  local first = redis.call('GET', KEYS[2])
  if first then
    return {'first', first}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
local g = mesh_publish(KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[2], ARGV[7], ARGV[8])
local a = mesh_publish(KEYS[5], KEYS[6], ARGV[5], ARGV[6], ARGV[2], ARGV[7], ARGV[8])
local positions = g[1] .. ':' .. g[2] .. ':' .. a[1] .. ':' .. a[2]
-- The job's payload as mesh_feed::projection::FeedJob reads it.
mesh_enqueue_job(KEYS[7], ARGV[10], ARGV[11] .. '\n' .. positions .. '\n' .. ARGV[2])
local result = positions .. '\n' .. ARGV[1]
if with_request then
  redis.call('SET', KEYS[2], result, 'EX', ARGV[9])
end
return {'ok', result}

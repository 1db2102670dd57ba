-- Script ARGV: expected version, attributes to set (JSON object), keys to remove (JSON
-- array), most attributes, most bytes of keys and values, event id, event payload before
-- the version, between the version and the attributes, after the attributes.
--
-- The patch follows AttributesPatch::apply (the reference): removals first, then sets; a
-- result over a limit replies 'limit' with the current state and changes nothing (the caller
-- reports the violation through the reference rules). Compare and set on the version.
local ctx = context()
local expected = tonumber(ARGV[FIRST_ARG])
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
if session.version ~= expected then
  return reply('conflict', session)
end
local attributes = cjson.decode(session.attributes)
for _, key in ipairs(cjson.decode(ARGV[FIRST_ARG + 2])) do
  attributes[key] = nil
end
for key, value in pairs(cjson.decode(ARGV[FIRST_ARG + 1])) do
  attributes[key] = value
end
local count, bytes = 0, 0
for key, value in pairs(attributes) do
  count = count + 1
  bytes = bytes + #key + #value
end
if count > tonumber(ARGV[FIRST_ARG + 3]) or bytes > tonumber(ARGV[FIRST_ARG + 4]) then
  return reply('limit', session)
end
local encoded = '{}'
if count > 0 then
  encoded = cjson.encode(attributes)
end
session.version = expected + 1
session.attributes = encoded
session.update = ctx.now
redis.call('HSET', ctx.key, 'version', session.version, 'attributes', encoded, 'update', ctx.now)
save_expire(ctx, session, slide(session, ctx.now, ctx.idle))
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG + 5],
  ARGV[FIRST_ARG + 6] .. session.version .. ARGV[FIRST_ARG + 7] .. encoded .. ARGV[FIRST_ARG + 8])
announce(ctx, 'UPDATED', session)
return reply('ok', session)

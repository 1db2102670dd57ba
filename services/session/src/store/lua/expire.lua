-- Script ARGV: event id, event payload before the version, after the version. Ends the
-- session if it has ended by `now` (the sweeper found it due in the expiry index): removes
-- it, enqueues its EXPIRED audit event and announces EXPIRED, once — a second sweeper that
-- found the same entry finds no session. A session touched meanwhile is left alone (its
-- index entry moved on); an entry whose session is gone is dropped. Replies the final
-- version, or nil when nothing ended.
local ctx = context()
local session = load(ctx.key, ctx.user)
if session == nil then
  redis.call('ZREM', ctx.expiry, ctx.member)
  return nil
end
if not ended(session, ctx.now) then
  redis.call('ZADD', ctx.expiry, math.min(session.expire, session.max_expire), ctx.member)
  return nil
end
remove(ctx)
mesh_enqueue_job(ctx.stream, ARGV[FIRST_ARG], ARGV[FIRST_ARG + 1] .. session.version .. ARGV[FIRST_ARG + 2])
announce(ctx, 'EXPIRED', session)
return session.version

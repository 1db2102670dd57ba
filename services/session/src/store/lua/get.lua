-- Script ARGV: the read step (ms), right after the six leading arguments (the get script
-- gets no channel arguments, so it is ARGV[7], not ARGV[FIRST_ARG]). Get counts as activity: it slides the idle expiry by
-- whole read steps or onto the cap (Lifetimes::slide_on_read), announces nothing. The store
-- runs it only when its plain HMGET read found such a slide due; the script decides again on
-- what it finds, so concurrent reads write once.
local ctx = context()
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
local expire = slide(session, ctx.now, ctx.idle)
local step = tonumber(ARGV[7])
if expire - session.expire >= step or (expire == session.max_expire and expire ~= session.expire) then
  save_expire(ctx, session, expire)
end
return reply('ok', session)

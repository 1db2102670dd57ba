-- No script ARGV. Get counts as activity: it slides the idle expiry, announces nothing. The
-- store runs it only when a read moves the expiry by a whole read step (Lifetimes::slide_on_read);
-- other reads are a plain HMGET.
local ctx = context()
local session = load_live(ctx.key, ctx.user, ctx.now)
if session == nil then
  return nil
end
save_expire(ctx, session, slide(session, ctx.now, ctx.idle))
return reply('ok', session)

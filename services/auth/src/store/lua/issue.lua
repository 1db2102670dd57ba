-- Starts a family with its first token. ARGV: hash, tenant, user, session, family, expire (ms).
store_token(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]))
local sessions = session_key(ARGV[2], ARGV[4])
redis.call('SADD', sessions, ARGV[5])
if redis.call('PEXPIRETIME', sessions) < tonumber(ARGV[6]) then
  redis.call('PEXPIREAT', sessions, ARGV[6])
end
return 1

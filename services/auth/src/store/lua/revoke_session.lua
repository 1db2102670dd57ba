-- Revokes every family of a session. ARGV: tenant, session. Replies the family ids.
local sessions = session_key(ARGV[1], ARGV[2])
local families = redis.call('SMEMBERS', sessions)
for _, family in ipairs(families) do
  revoke_family(ARGV[1], ARGV[2], family)
end
redis.call('DEL', sessions)
return families

-- Appends a job (attempt 1, enqueued now by the server's clock).
-- ARGV: job id, payload.
redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'payload', ARGV[2], 'attempt', 1, 'enqueued_at', now_ms())
return 1

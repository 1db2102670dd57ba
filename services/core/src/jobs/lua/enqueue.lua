-- Appends a job (attempt 1, enqueued now by the server's clock).
-- ARGV: job id, payload.
mesh_enqueue_job(KEYS[1], ARGV[1], ARGV[2])
return 1

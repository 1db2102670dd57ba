-- Appends a job to a queue's stream (attempt 1, enqueued now by the server's clock). Used by
-- the queue's own enqueue script and by other components' scripts that enqueue atomically
-- with their own writes (their keys share the queue's hash tag).
local function mesh_enqueue_job(stream, id, payload)
  redis.call('XADD', stream, '*', 'id', id, 'payload', payload, 'attempt', 1, 'enqueued_at', now_ms())
end

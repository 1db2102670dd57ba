-- The audit trail of sessions: one row per change, keyed by the event id, written once
-- (INSERT ... ON CONFLICT (event_id) DO NOTHING) and never changed.
CREATE TABLE audit_events (
    event_id    TEXT        PRIMARY KEY,
    tenant_id   TEXT        NOT NULL,
    user_id     TEXT        NOT NULL,
    session_id  TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('CREATED', 'UPDATED', 'TOUCHED', 'DELETED', 'EXPIRED')),
    version     BIGINT      NOT NULL CHECK (version >= 1),
    occurred_at TIMESTAMPTZ NOT NULL,
    attributes  JSONB,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The history of one session, and all sessions of one user.
CREATE INDEX audit_events_by_session ON audit_events (tenant_id, session_id, occurred_at);
CREATE INDEX audit_events_by_user ON audit_events (tenant_id, user_id, occurred_at);

-- Append-only, enforced: rows cannot be updated or deleted and the table cannot be
-- truncated. A retention job run by an operator disables these triggers on purpose.
CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

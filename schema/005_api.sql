-- API tokens, and row-level security for customer requests (docs/http-api.md).

-- Tokens: only the SHA-256 of a token is stored; `prefix` (the first characters) helps
-- people tell their tokens apart. A revocation or deletion is announced with NOTIFY so
-- every engine drops the token from its cache at once.
CREATE TABLE api_tokens (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  name          text CONSTRAINT api_tokens_name_length CHECK (length(name) <= 100),
  scope         text NOT NULL CONSTRAINT api_tokens_scope_check CHECK (scope IN ('operator', 'customer')),
  token_sha256  text NOT NULL UNIQUE CONSTRAINT api_tokens_sha256_format CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
  prefix        text NOT NULL,
  expires_at    timestamptz,
  revoked_at    timestamptz,
  last_used_at  timestamptz,
  created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_tokens_user_id_idx ON api_tokens (user_id);

CREATE FUNCTION sb_api_tokens_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('sb_tokens', OLD.token_sha256);
  RETURN NULL;
END
$$;
CREATE TRIGGER api_tokens_changed AFTER UPDATE OF revoked_at, expires_at, scope OR DELETE
  ON api_tokens FOR EACH ROW EXECUTE FUNCTION sb_api_tokens_notify();

-- Row-level security: customer requests run as the role sb_api_customer with the
-- setting sb.user_id naming the token's user, and see only that user's rows, whatever
-- the query says. The engine's own connections (the tables' owner) are not affected.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sb_api_customer') THEN
    CREATE ROLE sb_api_customer NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL; -- another database of this cluster made it at the same moment
END
$$;
GRANT sb_api_customer TO CURRENT_USER;
GRANT USAGE ON SCHEMA public TO sb_api_customer;
GRANT SELECT ON plans TO sb_api_customer;
GRANT SELECT ON instances, instance_events, instance_usage, instance_logs, backups
  TO sb_api_customer;

CREATE FUNCTION sb_api_user() RETURNS uuid
LANGUAGE sql STABLE AS $$ SELECT nullif(current_setting('sb.user_id', true), '')::uuid $$;

ALTER TABLE instances ENABLE ROW LEVEL SECURITY;
CREATE POLICY instances_own ON instances TO sb_api_customer USING (user_id = sb_api_user());
ALTER TABLE instance_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY instance_events_own ON instance_events TO sb_api_customer
  USING (user_id = sb_api_user());
ALTER TABLE instance_usage ENABLE ROW LEVEL SECURITY;
CREATE POLICY instance_usage_own ON instance_usage TO sb_api_customer
  USING (instance_id IN (SELECT id FROM instances WHERE user_id = sb_api_user()));
ALTER TABLE instance_logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY instance_logs_own ON instance_logs TO sb_api_customer
  USING (instance_id IN (SELECT id FROM instances WHERE user_id = sb_api_user()));
ALTER TABLE backups ENABLE ROW LEVEL SECURITY;
CREATE POLICY backups_own ON backups TO sb_api_customer
  USING (instance_id IN (SELECT id FROM instances WHERE user_id = sb_api_user()));

-- The oldest event kept, whoever asks: a customer resuming its stream must be told
-- whether events were archived since, which its own rows cannot say.
CREATE FUNCTION sb_events_oldest() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT coalesce(min(seq), 0) FROM instance_events
$$;

-- Listing instances newest first, and counting live jobs for /metrics.
CREATE INDEX instances_created_at_idx ON instances (created_at, id);
CREATE INDEX jobs_live_status_idx ON jobs (status) WHERE status IN ('queued', 'running', 'dead');

-- Finished jobs are kept a week for inspection (sb.fleet.jobs), then removed by the
-- scheduler, so the queue does not grow without bound.
INSERT INTO schedules (name, job_kind, interval_seconds) VALUES ('jobs_cleanup', 'jobs.cleanup', 3600);

-- Waking job workers. Every committed event is announced on sb_events (001), and the
-- websocket side needs all of them, but job workers need only those that came with a
-- job: queueing a job (or making a waiting one ready) marks the transaction (the
-- setting sb.jobs_queued), and the event sequencer then announces `SEQ j` instead of
-- `SEQ`. Jobs queued without an event (sb.fleet.enqueue, the scheduler) are announced
-- on sb_jobs by core/jobs.c. So a stream of events that queue nothing costs the
-- workers nothing.
CREATE FUNCTION sb_jobs_mark_queued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('sb.jobs_queued', 'on', true);
  RETURN NULL;
END
$$;
CREATE TRIGGER jobs_mark_queued AFTER INSERT ON jobs
  FOR EACH STATEMENT EXECUTE FUNCTION sb_jobs_mark_queued();
-- A job made ready again (a server that became active lets waiting requests retry).
CREATE TRIGGER jobs_mark_ready AFTER UPDATE ON jobs
  FOR EACH ROW WHEN (NEW.status = 'queued' AND NEW.run_at <= now())
  EXECUTE FUNCTION sb_jobs_mark_queued();

CREATE OR REPLACE FUNCTION sb_instance_events_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  pos bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(6012680095412830211);  -- SB_LOCK_EVENTS in core/locks.h
  pos := nextval('instance_events_seq_seq');
  UPDATE instance_events SET seq = pos WHERE id = NEW.id;
  IF current_setting('sb.jobs_queued', true) = 'on' THEN
    PERFORM pg_notify('sb_events', pos::text || ' j');
  ELSE
    PERFORM pg_notify('sb_events', pos::text);
  END IF;
  RETURN NULL;
END
$$;

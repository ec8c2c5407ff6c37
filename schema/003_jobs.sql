-- Durable jobs, the engine processes that run them, and the periodic schedules the
-- scheduler leader turns into jobs (docs/architecture.md, "Jobs and the scheduler").

-- Engine processes on this database. An engine is alive while it holds the advisory
-- lock (1399811183, id) on its coordination connection: PostgreSQL releases it the
-- moment the process dies, so nothing here needs a heartbeat to be trusted.
CREATE TABLE engines (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  host          text NOT NULL,
  pid           integer NOT NULL CONSTRAINT engines_pid_positive CHECK (pid > 0),
  version       text NOT NULL,
  status        text NOT NULL DEFAULT 'running'
                CONSTRAINT engines_status_check CHECK (status IN ('running', 'stopped')),
  started_at    timestamptz NOT NULL DEFAULT now(),
  last_seen_at  timestamptz NOT NULL DEFAULT now(),
  stopped_at    timestamptz
);

-- The queue. Workers claim ready jobs with FOR UPDATE SKIP LOCKED; a job is 'running'
-- while its engine lives, and goes back to 'queued' when that engine dies (any engine
-- checks). A failed attempt is retried with exponential backoff and jitter until
-- max_attempts, then the job is 'dead' with its last error.
CREATE TABLE jobs (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  kind           text NOT NULL CONSTRAINT jobs_kind_format CHECK (kind ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
  status         text NOT NULL DEFAULT 'queued'
                 CONSTRAINT jobs_status_check CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'canceled')),
  payload        jsonb NOT NULL DEFAULT '{}'::jsonb,
  instance_id    uuid REFERENCES instances (id) ON DELETE CASCADE,
  shared_rds_id  uuid REFERENCES shared_rds_instances (id) ON DELETE CASCADE,
  dedupe_key     text,
  priority       smallint NOT NULL DEFAULT 0,
  attempts       integer NOT NULL DEFAULT 0 CONSTRAINT jobs_attempts_nonneg CHECK (attempts >= 0),
  max_attempts   integer NOT NULL DEFAULT 8 CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts > 0),
  run_at         timestamptz NOT NULL DEFAULT now(),
  locked_by      bigint REFERENCES engines (id) ON DELETE SET NULL,
  locked_at      timestamptz,
  last_error     text,
  created_at     timestamptz NOT NULL DEFAULT now(),
  updated_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz,
  CONSTRAINT jobs_running_is_locked CHECK (status <> 'running' OR locked_by IS NOT NULL)
);
-- One live job per dedupe key (say, one provisioning job per instance, one server
-- creation at a time): enqueueing a duplicate is a no-op.
CREATE UNIQUE INDEX jobs_dedupe_live ON jobs (dedupe_key) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_ready_idx ON jobs (priority DESC, run_at) WHERE status = 'queued';
CREATE INDEX jobs_instance_id_idx ON jobs (instance_id) WHERE instance_id IS NOT NULL;
CREATE INDEX jobs_shared_rds_id_idx ON jobs (shared_rds_id) WHERE shared_rds_id IS NOT NULL;
CREATE INDEX jobs_locked_by_idx ON jobs (locked_by) WHERE locked_by IS NOT NULL;
CREATE TRIGGER jobs_updated_at BEFORE UPDATE ON jobs
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Idle workers are woken by the NOTIFY every event sends at commit (each request that
-- queues a job also writes an event), by their own engine when it queues one, and by a
-- poll every second otherwise. A second NOTIFY per transaction would cost every
-- provisioning a share of the commit-time serialisation NOTIFY imposes.

-- Periodic work from the spec (health checks every 5 minutes, capacity check). The
-- scheduler leader claims a due row with a conditional UPDATE and enqueues its job in
-- the same transaction, so each run happens once however many engines there are.
CREATE TABLE schedules (
  name              text PRIMARY KEY CONSTRAINT schedules_name_format CHECK (name ~ '^[a-z][a-z0-9_]*$'),
  job_kind          text NOT NULL,
  interval_seconds  integer NOT NULL CONSTRAINT schedules_interval_positive CHECK (interval_seconds > 0),
  enabled           boolean NOT NULL DEFAULT true,
  next_run_at       timestamptz NOT NULL DEFAULT now(),
  last_run_at       timestamptz,
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER schedules_updated_at BEFORE UPDATE ON schedules
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();
INSERT INTO schedules (name, job_kind, interval_seconds) VALUES
  ('health_checks', 'fleet.health_checks', 300),   -- spec: "Health checks every 5 minutes"
  ('capacity_check', 'fleet.capacity_check', 60);

-- What the last health check saw, beside the transactional capacity counter.
ALTER TABLE shared_rds_instances ADD COLUMN observed_databases integer
  CONSTRAINT shared_rds_observed_nonneg CHECK (observed_databases >= 0);

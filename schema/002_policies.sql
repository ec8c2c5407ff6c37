-- The policy engine's records: every version of every policy that was loaded (or
-- refused), and every decision that caused an effect, linked to the event it caused, so
-- `solobase policy explain EVENT` can show which code, which input and which output
-- produced it (docs/policies.md).

CREATE TABLE policy_versions (
  name            text NOT NULL CONSTRAINT policy_versions_name_format CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  sha256          text NOT NULL CONSTRAINT policy_versions_sha256_format CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  source          text NOT NULL,
  status          text NOT NULL
                  CONSTRAINT policy_versions_status_check CHECK (status IN ('loaded', 'refused')),
  error           text,
  first_seen_at   timestamptz NOT NULL DEFAULT now(),
  last_loaded_at  timestamptz NOT NULL DEFAULT now(),
  load_count      integer NOT NULL DEFAULT 1 CONSTRAINT policy_versions_load_count_positive CHECK (load_count > 0),
  PRIMARY KEY (name, sha256),
  CONSTRAINT policy_versions_refusal_has_error CHECK (status = 'loaded' OR error IS NOT NULL)
);
CREATE INDEX policy_versions_last_loaded_idx ON policy_versions (name, last_loaded_at);

CREATE TABLE policy_decisions (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  policy          text NOT NULL,
  function        text NOT NULL CONSTRAINT policy_decisions_function_format CHECK (function ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
  version_sha256  text NOT NULL,
  input           jsonb COMPRESSION lz4 NOT NULL,
  output          jsonb COMPRESSION lz4 NOT NULL,
  event_id        uuid REFERENCES instance_events (id) ON DELETE CASCADE,  -- and through it, the instance
  duration_us     integer CONSTRAINT policy_decisions_duration_nonneg CHECK (duration_us >= 0),
  created_at      timestamptz NOT NULL DEFAULT now()
);
-- version_sha256 names a row of policy_versions, recorded when that version was
-- loaded. It is deliberately not a foreign key: the version is recorded on the
-- engine's own connection, and a decision must not fail (or wait) for it.
-- Decisions are written with every effect and read by event (explain); that is the
-- only index, to keep the write cheap.
CREATE INDEX policy_decisions_event_id_idx ON policy_decisions (event_id);

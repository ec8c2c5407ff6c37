-- Job workers are woken on sb_jobs only.
--
-- Until now a transaction that queued a job had its event announced as `SEQ j` on
-- sb_events (005_api.sql), so every engine's coordinator listened on sb_events and was
-- woken by every event, 1,000 times a second under a busy stream, to find the few that
-- came with a job. Now the event sequencer sends `NOTIFY sb_jobs` as well when the
-- transaction queued a job, and the coordinator listens on sb_jobs alone. The extra
-- notification costs that transaction one more entry in the notification queue at
-- commit (PostgreSQL takes the queue's lock once per committing transaction, not per
-- notification), and identical notifications of one transaction are folded into one.
-- sb_events payloads are the stream position only, `SEQ`.
CREATE OR REPLACE FUNCTION sb_instance_events_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  pos bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(6012680095412830211);  -- SB_LOCK_EVENTS in core/locks.h
  pos := nextval('instance_events_seq_seq');
  UPDATE instance_events SET seq = pos WHERE id = NEW.id;
  PERFORM pg_notify('sb_events', pos::text);
  IF current_setting('sb.jobs_queued', true) = 'on' THEN
    PERFORM pg_notify('sb_jobs', '');
  END IF;
  RETURN NULL;
END
$$;

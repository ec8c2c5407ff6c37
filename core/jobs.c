/*
 * jobs.c: enqueue, claim, finish and recover jobs (see jobs.h).
 */
#include "jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

int sb_jobs_enqueue(sb_db_t *db, const sb_job_enqueue_t *j, char *id_out, bool *created,
                    sb_error_t *err) {
  char delay[16], max[16];
  snprintf(delay, sizeof delay, "%d", j->delay_s);
  snprintf(max, sizeof max, "%d", j->max_attempts > 0 ? j->max_attempts : 8);
  const char *params[] = {j->kind, j->payload ? j->payload : "{}", j->instance_id,
                          j->shared_rds_id, j->dedupe_key, delay, max};
  PGresult *res = sb_db_query(
      db,
      "INSERT INTO jobs (kind, payload, instance_id, shared_rds_id, dedupe_key, run_at, "
      "max_attempts) VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7) "
      "ON CONFLICT (dedupe_key) WHERE status IN ('queued', 'running') DO NOTHING "
      "RETURNING id, pg_notify('sb_jobs', '')", /* wakes idle workers of every engine */
      7, params, err);
  if (!res) return -1;
  bool made = PQntuples(res) == 1;
  if (made && id_out) snprintf(id_out, 37, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  if (created) *created = made;
  if (!made && id_out) {
    id_out[0] = '\0';
    if (j->dedupe_key) {
      const char *k[] = {j->dedupe_key};
      res = sb_db_query(db,
                        "SELECT id FROM jobs WHERE dedupe_key = $1 "
                        "AND status IN ('queued', 'running')",
                        1, k, err);
      if (!res) return -1;
      if (PQntuples(res)) snprintf(id_out, 37, "%s", PQgetvalue(res, 0, 0));
      PQclear(res);
    }
  }
  return 0;
}

int sb_jobs_claim(sb_db_t *db, long engine_id, sb_job_t *job, sb_error_t *err) {
  memset(job, 0, sizeof *job);
  char eid[32];
  snprintf(eid, sizeof eid, "%ld", engine_id);
  const char *params[] = {eid};
  /* One statement: pick the next ready job nobody holds, and take it. */
  PGresult *res = sb_db_query(
      db,
      "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, "
      "locked_at = now() WHERE id = (SELECT id FROM jobs WHERE status = 'queued' "
      "AND run_at <= now() ORDER BY priority DESC, run_at LIMIT 1 FOR UPDATE SKIP LOCKED) "
      "RETURNING id, kind, coalesce(instance_id::text, ''), coalesce(shared_rds_id::text, ''), "
      "payload, attempts, max_attempts",
      1, params, err);
  if (!res) return -1;
  if (PQntuples(res) == 0) {
    PQclear(res);
    return 0;
  }
  snprintf(job->id, sizeof job->id, "%s", PQgetvalue(res, 0, 0));
  snprintf(job->kind, sizeof job->kind, "%s", PQgetvalue(res, 0, 1));
  snprintf(job->instance_id, sizeof job->instance_id, "%s", PQgetvalue(res, 0, 2));
  snprintf(job->shared_rds_id, sizeof job->shared_rds_id, "%s", PQgetvalue(res, 0, 3));
  job->payload = sb_xstrdup(PQgetvalue(res, 0, 4));
  job->attempts = atoi(PQgetvalue(res, 0, 5));
  job->max_attempts = atoi(PQgetvalue(res, 0, 6));
  PQclear(res);
  return 1;
}

int sb_jobs_backoff_s(int attempts) {
  int base = attempts >= 10 ? 600 : 1 << attempts;
  if (base > 600) base = 600;
  unsigned char r = 0;
  sb_random_bytes(&r, 1, NULL);
  /* +-25 %, so jobs that failed together do not retry together. */
  int jitter = (int)((long)base * ((int)r - 128) / 512);
  return base + jitter < 1 ? 1 : base + jitter;
}

int sb_jobs_finish(sb_db_t *db, long engine_id, const sb_job_t *job, sb_job_outcome_t outcome,
                   const char *error, int delay_s, sb_job_dead_fn on_dead, void *ud,
                   sb_error_t *err) {
  char eid[32], delay[16];
  snprintf(eid, sizeof eid, "%ld", engine_id);
  bool dead = outcome == SB_JOB_FAIL || (outcome == SB_JOB_RETRY && job->attempts >= job->max_attempts);
  int rc;
  if (outcome == SB_JOB_DONE) {
    const char *p[] = {job->id, eid};
    rc = sb_db_exec_params(db,
                           "UPDATE jobs SET status = 'succeeded', finished_at = now(), "
                           "last_error = NULL WHERE id = $1 AND locked_by = $2",
                           2, p, err);
  } else if (dead) {
    const char *why = error ? error : "failed";
    const char *p[] = {job->id, eid, why};
    if (sb_db_begin(db, err) != 0) return -1;
    PGresult *res = sb_db_query(db,
                                "UPDATE jobs SET status = 'dead', finished_at = now(), "
                                "last_error = $3 WHERE id = $1 AND locked_by = $2 RETURNING id",
                                3, p, err);
    rc = res ? 0 : -1;
    /* Not ours any more (requeued as an orphan meanwhile): its new run decides. */
    bool ours = res && PQntuples(res) == 1;
    if (res) PQclear(res);
    const char *ev[] = {job->id, job->kind, why, job->instance_id[0] ? job->instance_id : NULL,
                        job->shared_rds_id[0] ? job->shared_rds_id : NULL};
    if (rc == 0 && ours)
      rc = sb_db_exec_params(
          db,
          "INSERT INTO instance_events (instance_id, user_id, shared_rds_id, event_type, "
          "description, payload, actor) "
          "SELECT $4::uuid, (SELECT user_id FROM instances WHERE id = $4::uuid), $5::uuid, "
          "'job.dead', 'Job ' || $2 || ' gave up: ' || $3, "
          "jsonb_build_object('job_id', $1::text, 'kind', $2::text, 'error', $3::text), 'engine'",
          5, ev, err);
    if (rc == 0 && ours && on_dead) rc = on_dead(ud, db, job, why, err);
    if (rc == 0) rc = sb_db_commit(db, err);
    else sb_db_rollback(db, NULL);
    if (rc == 0 && ours)
      sb_warn("jobs", "job %s (%s) is dead after %d attempts: %s", job->id, job->kind,
              job->attempts, why);
  } else {
    /* Retry after a backoff, with a job.retry event in the same statement; a wait does
     * not use up an attempt and is no event (it is not a failure). */
    bool wait_only = outcome == SB_JOB_WAIT;
    int wait = wait_only ? (delay_s > 0 ? delay_s : 5) : sb_jobs_backoff_s(job->attempts);
    snprintf(delay, sizeof delay, "%d", wait);
    const char *p[] = {job->id, eid, delay, error, wait_only ? "t" : "f"};
    rc = sb_db_exec_params(
        db,
        "WITH j AS (UPDATE jobs SET status = 'queued', locked_by = NULL, locked_at = NULL, "
        "  run_at = now() + make_interval(secs => $3::int), last_error = $4::text, "
        "  attempts = attempts - CASE WHEN $5::boolean THEN 1 ELSE 0 END "
        "  WHERE id = $1 AND locked_by = $2 "
        "  RETURNING id, kind, instance_id, shared_rds_id, attempts, max_attempts, run_at) "
        "INSERT INTO instance_events (instance_id, user_id, shared_rds_id, event_type, "
        "  description, payload, actor) "
        "SELECT j.instance_id, (SELECT user_id FROM instances WHERE id = j.instance_id), "
        "  j.shared_rds_id, 'job.retry', 'Job ' || j.kind || ' attempt ' || j.attempts || "
        "  ' failed, retrying: ' || coalesce($4::text, 'failed'), "
        "  jsonb_build_object('job_id', j.id, 'kind', j.kind, 'attempt', j.attempts, "
        "  'max_attempts', j.max_attempts, 'error', $4::text, 'run_at', j.run_at), 'engine' "
        "FROM j WHERE NOT $5::boolean",
        5, p, err);
    if (!wait_only)
      sb_info("jobs", "job %s (%s) attempt %d failed, retrying in %d s: %s", job->id, job->kind,
              job->attempts, wait, error ? error : "");
  }
  return rc;
}

int sb_jobs_requeue_orphans(sb_db_t *db, int *requeued, sb_error_t *err) {
  *requeued = 0;
  /* Every engine on record as running, and every engine with running jobs (a row
   * marked stopped meanwhile, say): each one whose lock can be taken is dead. */
  PGresult *res = sb_db_query(db,
                              "SELECT id FROM engines WHERE status = 'running' "
                              "UNION SELECT locked_by FROM jobs WHERE status = 'running'",
                              0, NULL, err);
  if (!res) return -1;
  int rc = 0;
  for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
    const char *eid[] = {PQgetvalue(res, i, 0)};
    /* One statement, so one transaction: take the lock for a moment (exclusive, so it
     * is free only when no session of the engine holds it shared), mark the engine
     * stopped, requeue its jobs; pg_try_advisory_xact_lock lets go at commit. */
    PGresult *r = sb_db_query(
        db,
        "WITH dead AS (SELECT 1 WHERE pg_try_advisory_xact_lock(" SB_ENGINE_LOCK_CLASS ", $1::int)), "
        "stopped AS (UPDATE engines SET status = 'stopped', stopped_at = coalesce(stopped_at, now()) "
        "  WHERE id = $1 AND status = 'running' AND EXISTS (SELECT 1 FROM dead) RETURNING 1), "
        "requeued AS (UPDATE jobs SET status = 'queued', locked_by = NULL, locked_at = NULL, "
        "  run_at = now(), last_error = 'the engine running it stopped' "
        "  WHERE status = 'running' AND locked_by = $1 AND EXISTS (SELECT 1 FROM dead) RETURNING 1) "
        "SELECT (SELECT count(*) FROM stopped), (SELECT count(*) FROM requeued)",
        1, eid, err);
    if (!r) {
      rc = -1;
      break;
    }
    bool stopped = atoi(PQgetvalue(r, 0, 0)) > 0;
    int n = atoi(PQgetvalue(r, 0, 1));
    PQclear(r);
    if (stopped) sb_info("jobs", "engine %s is gone (no session holds its lock)", eid[0]);
    if (n) sb_info("jobs", "requeued %d job%s of stopped engine %s", n, n == 1 ? "" : "s", eid[0]);
    *requeued += n;
  }
  PQclear(res);
  return rc;
}

void sb_job_clear(sb_job_t *job) {
  free(job->payload);
  memset(job, 0, sizeof *job);
}

int sb_engine_register(sb_db_t *db, long *engine_id, sb_error_t *err) {
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  char pid[16];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  const char *params[] = {host, pid, SB_VERSION};
  /* The lock is taken before the row commits: no reaper can see the row unlocked. Held
   * for the life of this session (shared, as attached sessions hold it). */
  PGresult *res = sb_db_query(db,
                              "INSERT INTO engines (host, pid, version) VALUES ($1, $2, $3) "
                              "RETURNING id, pg_advisory_lock_shared(" SB_ENGINE_LOCK_CLASS
                              ", id::int)",
                              3, params, err);
  if (!res) return -1;
  *engine_id = atol(PQgetvalue(res, 0, 0));
  PQclear(res);
  return 0;
}

int sb_engine_unregister(sb_db_t *db, long engine_id, sb_error_t *err) {
  char id[32];
  snprintf(id, sizeof id, "%ld", engine_id);
  const char *p[] = {id};
  if (sb_db_exec_params(db,
                        "UPDATE engines SET status = 'stopped', stopped_at = now() WHERE id = $1",
                        1, p, err) != 0)
    return -1;
  return sb_engine_detach(db, engine_id, err);
}

int sb_engine_attach(sb_db_t *db, long engine_id, sb_error_t *err) {
  char id[32];
  snprintf(id, sizeof id, "%ld", engine_id);
  const char *p[] = {id};
  /* Not waiting: the lock is taken exclusively only by a reaper that found it free. */
  PGresult *res = sb_db_query(
      db, "SELECT pg_try_advisory_lock_shared(" SB_ENGINE_LOCK_CLASS ", $1::int)", 1, p, err);
  if (!res) return -1;
  bool held = PQgetvalue(res, 0, 0)[0] == 't';
  PQclear(res);
  if (!held) return 0;
  /* A reaper that took the lock before us has committed by the time we have it (locks
   * go after the commit is visible), so a fresh look at the row tells whether the id
   * is still alive; from now on no reaper can take it. */
  res = sb_db_query(db, "SELECT 1 FROM engines WHERE id = $1 AND status = 'running'", 1, p, err);
  int alive = res ? PQntuples(res) == 1 : -1;
  PQclear(res);
  if (alive != 1) {
    sb_error_t e2;
    if (PQstatus(db->conn) == CONNECTION_OK) sb_engine_detach(db, engine_id, &e2);
  }
  return alive;
}

int sb_engine_detach(sb_db_t *db, long engine_id, sb_error_t *err) {
  char id[32];
  snprintf(id, sizeof id, "%ld", engine_id);
  const char *p[] = {id};
  return sb_db_exec_params(db, "SELECT pg_advisory_unlock_shared(" SB_ENGINE_LOCK_CLASS ", $1::int)",
                           1, p, err);
}

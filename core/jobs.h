/*
 * jobs.h: the durable job queue in the management database.
 *
 * A job is a row of `jobs`: a kind (the handler to run), a JSON payload, optionally the
 * instance or server it is about, and a dedupe key so that enqueueing the same work
 * twice is a no-op. Workers claim ready jobs with FOR UPDATE SKIP LOCKED and mark them
 * running under their engine's id; a handler's outcome either finishes the job,
 * retries it later (exponential backoff with jitter, counted against max_attempts, with
 * a `job.retry` event; then 'dead' with the last error and a `job.dead` event, and the
 * caller's hook gives up what the job was for in the same transaction), or reschedules
 * it without counting an attempt (waiting for something, such as a new server). When
 * an engine dies its running jobs go back to the queue: its liveness is an advisory
 * lock, held shared by its registering session and by each session that claims jobs
 * under its id, which PostgreSQL drops with the sessions. The engine counts as dead
 * when no session holds it any more; a job is therefore never requeued while the
 * session that claimed it lives. Handlers must still be idempotent, as every step in
 * core/provision.c is: a worker whose own connection broke may finish the step in
 * hand while the job is requeued.
 */
#ifndef SB_JOBS_H
#define SB_JOBS_H

#include <stdbool.h>

#include "db.h"
#include "error.h"

/* Key 1 of the two-int advisory lock an engine holds while alive; key 2 is its id. */
#define SB_ENGINE_LOCK_CLASS "1399811183" /* 0x536F6C6F, "Solo" */

typedef struct sb_job {
  char id[37];
  char kind[64];
  char instance_id[37]; /* "" when none */
  char shared_rds_id[37];
  char *payload;        /* JSON, owned */
  int attempts;         /* including this one */
  int max_attempts;
} sb_job_t;

typedef enum {
  SB_JOB_DONE,       /* succeeded */
  SB_JOB_RETRY,      /* failed: try again after a backoff, or die after max_attempts */
  SB_JOB_WAIT,       /* not ready (say, no server has room yet): run again later, no attempt used */
  SB_JOB_FAIL,       /* failed for good: dead now */
} sb_job_outcome_t;

typedef struct sb_job_enqueue {
  const char *kind;
  const char *payload;      /* JSON; NULL is {} */
  const char *instance_id;  /* may be NULL */
  const char *shared_rds_id;
  const char *dedupe_key;   /* may be NULL */
  int delay_s;
  int max_attempts;         /* 0: default */
} sb_job_enqueue_t;

/* Enqueues a job (on db's current transaction, if any). *created is false when a live
 * job with the same dedupe key exists; id_out (37 bytes, may be NULL) then holds that
 * job's id. */
int sb_jobs_enqueue(sb_db_t *db, const sb_job_enqueue_t *j, char *id_out, bool *created,
                    sb_error_t *err);
/* Claims the next ready job for engine_id. 1: claimed into *job; 0: none ready. */
int sb_jobs_claim(sb_db_t *db, long engine_id, sb_job_t *job, sb_error_t *err);
/* Run in the transaction that marks a job dead, with the job's last error: gives up
 * what the job was for (core/provision.c: sb_fleet_job_dead). -1 rolls the whole
 * outcome back, so the job is not dead without it. */
typedef int (*sb_job_dead_fn)(void *ud, sb_db_t *db, const sb_job_t *job, const char *error,
                              sb_error_t *err);
/* Records the outcome of a claimed job. delay_s applies to SB_JOB_WAIT; on_dead (may be
 * NULL) runs with ud when the job dies. */
int sb_jobs_finish(sb_db_t *db, long engine_id, const sb_job_t *job, sb_job_outcome_t outcome,
                   const char *error, int delay_s, sb_job_dead_fn on_dead, void *ud,
                   sb_error_t *err);
/* Marks engines that died stopped and puts their running jobs back in the queue;
 * *requeued counts the jobs. */
int sb_jobs_requeue_orphans(sb_db_t *db, int *requeued, sb_error_t *err);
void sb_job_clear(sb_job_t *job);

/* Backoff before attempt n+1 (seconds): 2^n capped at 10 minutes, with +-25 % jitter. */
int sb_jobs_backoff_s(int attempts);

/* Registers an engine (a new row, and the liveness lock in the same statement, so that
 * nobody sees the row without the lock) on db; the engine lives as long as db or a
 * session attached to it does. A process that loses db registers again, as a new
 * engine: an id once seen dead stays dead. */
int sb_engine_register(sb_db_t *db, long *engine_id, sb_error_t *err);
/* Marks the engine stopped and lets go of db's hold on it. */
int sb_engine_unregister(sb_db_t *db, long engine_id, sb_error_t *err);
/* Makes db hold the liveness lock of engine_id too, so that what it claims under that
 * id stays the engine's while db lives, whatever becomes of the registering session. 1:
 * held; 0: the engine is stopped, or being recovered right now (nothing held). */
int sb_engine_attach(sb_db_t *db, long engine_id, sb_error_t *err);
/* Lets go of what sb_engine_attach took. */
int sb_engine_detach(sb_db_t *db, long engine_id, sb_error_t *err);

#endif

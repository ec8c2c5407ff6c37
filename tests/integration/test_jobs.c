/*
 * test_jobs.c: engines' liveness in core/jobs.c on a real PostgreSQL.
 *
 * An engine lives while any session holds its lock: the one that registered it, or one
 * attached to claim jobs under its id. An engine whose coordination connection broke
 * registers again under a new id (core/engine.c) while its workers may still run jobs
 * of the old one: those must not be requeued (and run twice) until the workers let go,
 * and an outcome recorded late under the old id must not touch a job someone else runs
 * by then. A dead engine is marked stopped even when it left no running job.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "jobs.h"
#include "sbtest.h"
#include "util.h"

static sb_db_t *db; /* the reaper's: holds no engine's lock */
static char *dbname;

static int setup(void **state) {
  (void)state;
  sbtest_init();
  db = sbtest_db_create("test_jobs", true, &dbname);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  sb_db_free(db);
  sbtest_db_drop(dbname);
  free(dbname);
  return 0;
}

static int clean(void **state) {
  (void)state;
  PQclear(sbtest_query(db, "DELETE FROM jobs", 0, NULL));
  PQclear(sbtest_query(db, "UPDATE engines SET status = 'stopped'", 0, NULL));
  return 0;
}

static sb_db_t *session(const char *name) {
  sb_error_t err;
  char *url = sbtest_url(dbname);
  sb_db_t *s = sb_db_connect(url, NULL, name, &err);
  free(url);
  assert_non_null(s);
  return s;
}

/* Closes s and waits for its backend to be gone, locks and all (a backend exits a
 * moment after its client hangs up). */
static void close_session(sb_db_t *s) {
  char pid[16];
  snprintf(pid, sizeof pid, "%d", PQbackendPID(s->conn));
  sb_db_free(s);
  const char *p[] = {pid};
  for (int i = 0; i < 500; i++) {
    char *n = sbtest_scalar(db, "SELECT count(*) FROM pg_locks WHERE pid = $1::int", 1, p);
    bool gone = strcmp(n, "0") == 0;
    free(n);
    if (gone) return;
    usleep(10000);
  }
  fail_msg("backend %s still holds locks after 5 s", pid);
}

static long registered(sb_db_t *s) {
  sb_error_t err;
  long id = 0;
  assert_int_equal(sb_engine_register(s, &id, &err), 0);
  assert_true(id > 0);
  return id;
}

static void claim_one(sb_db_t *s, long engine_id, sb_job_t *job) {
  sb_error_t err;
  sb_job_enqueue_t j = {.kind = "test.noop"};
  bool created = false;
  assert_int_equal(sb_jobs_enqueue(s, &j, NULL, &created, &err), 0);
  assert_true(created);
  assert_int_equal(sb_jobs_claim(s, engine_id, job, &err), 1);
}

static int reap(void) {
  sb_error_t err;
  int requeued = -1;
  assert_int_equal(sb_jobs_requeue_orphans(db, &requeued, &err), 0);
  return requeued;
}

static char *engine_status(long id) {
  char p0[32];
  snprintf(p0, sizeof p0, "%ld", id);
  const char *p[] = {p0};
  return sbtest_scalar(db, "SELECT status FROM engines WHERE id = $1", 1, p);
}

static char *job_field(const sb_job_t *job, const char *sql) {
  const char *p[] = {job->id};
  return sbtest_scalar(db, sql, 1, p);
}

static void assert_engine(long id, const char *want) {
  char *st = engine_status(id);
  assert_string_equal(st, want);
  free(st);
}

static void assert_job(const sb_job_t *job, const char *sql, const char *want) {
  char *v = job_field(job, sql);
  assert_string_equal(v, want);
  free(v);
}

/* The registering session gone, a worker still attached: the engine lives, its job is
 * left alone; once the worker lets go, the engine is stopped and the job requeued. */
static void test_attached_session_keeps_jobs(void **state) {
  (void)state;
  sb_error_t err;
  sb_db_t *coord = session("test coordinator"), *worker = session("test worker");
  long id = registered(coord);
  assert_int_equal(sb_engine_attach(worker, id, &err), 1);
  sb_job_t job;
  claim_one(worker, id, &job);
  close_session(coord);
  assert_int_equal(reap(), 0);
  assert_engine(id, "running");
  assert_job(&job, "SELECT status FROM jobs WHERE id = $1", "running");

  assert_int_equal(sb_engine_detach(worker, id, &err), 0);
  assert_int_equal(reap(), 1);
  assert_engine(id, "stopped");
  assert_job(&job, "SELECT status || ' ' || coalesce(locked_by::text, '-') FROM jobs WHERE id = $1",
             "queued -");
  /* A stopped id stays stopped: nobody attaches to it again. */
  assert_int_equal(sb_engine_attach(worker, id, &err), 0);
  assert_int_equal(reap(), 0);
  sb_job_clear(&job);
  sb_db_free(worker);
}

/* An engine that died without a running job is marked stopped too. */
static void test_dead_engine_without_jobs_is_stopped(void **state) {
  (void)state;
  sb_db_t *coord = session("test coordinator");
  long id = registered(coord);
  assert_int_equal(reap(), 0);
  assert_engine(id, "running");
  close_session(coord);
  assert_int_equal(reap(), 0);
  assert_engine(id, "stopped");
}

/* A worker whose connection broke records its outcome after the job was requeued and
 * claimed under a new id: the late outcome changes nothing. */
static void test_late_outcome_of_a_requeued_job(void **state) {
  (void)state;
  sb_error_t err;
  sb_db_t *old = session("test old engine");
  long old_id = registered(old);
  sb_job_t job;
  claim_one(old, old_id, &job);
  close_session(old);
  assert_int_equal(reap(), 1);

  sb_db_t *now = session("test new engine");
  long new_id = registered(now);
  sb_job_t again;
  assert_int_equal(sb_jobs_claim(now, new_id, &again, &err), 1);
  assert_string_equal(again.id, job.id);
  sb_db_t *late = session("test late worker");
  assert_int_equal(sb_jobs_finish(late, old_id, &job, SB_JOB_DONE, NULL, 0, NULL, NULL, &err), 0);
  char want[64];
  snprintf(want, sizeof want, "running %ld", new_id);
  assert_job(&job, "SELECT status || ' ' || locked_by FROM jobs WHERE id = $1", want);
  assert_int_equal(sb_jobs_finish(now, new_id, &again, SB_JOB_DONE, NULL, 0, NULL, NULL, &err), 0);
  assert_job(&job, "SELECT status FROM jobs WHERE id = $1", "succeeded");
  assert_int_equal(sb_engine_unregister(now, new_id, &err), 0);
  assert_engine(new_id, "stopped");
  sb_job_clear(&job);
  sb_job_clear(&again);
  sb_db_free(late);
  sb_db_free(now);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_attached_session_keeps_jobs, clean),
      cmocka_unit_test_setup(test_dead_engine_without_jobs_is_stopped, clean),
      cmocka_unit_test_setup(test_late_outcome_of_a_requeued_job, clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

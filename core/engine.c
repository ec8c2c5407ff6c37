/*
 * engine.c: the engine's threads (see engine.h).
 *
 * Threads and what they own:
 *   workers      each its own database connection, policy engine (Lua state) and
 *                fleet context; claim a job, run it, record the outcome, repeat; sleep
 *                on a condition variable when the queue is empty. A worker's connection
 *                holds the liveness lock of the engine id it claims under (attached,
 *                jobs.h), so a job is never recovered by anyone while its worker's
 *                session lives.
 *   coordinator  two connections: `coord` registered the engine (its row and liveness
 *                lock), LISTENs on sb_jobs and holds the scheduler lock when leader;
 *                `maint` (which holds neither, so it can test other engines' locks)
 *                runs the schedules and the recovery of dead engines' jobs.
 *   watcher      reloads policies when policies/ changes (policy_watch.c).
 *
 * When the coordination connection breaks (the database stopped or restarted, a
 * network fault), the id it registered is lost for good: its lock went with the
 * session, and any engine may recover its jobs as soon as no worker holds it. So the
 * engine drops the id (workers stop claiming; one with a job in hand finishes it and
 * records the outcome under the old id), waits for the database with backoff, and
 * registers again as a new engine, like at start-up; then workers attach to the new id
 * and the scheduler lock is contended for again. The HTTP side (server.c) reconnects on
 * its own and answers 503 meanwhile.
 */
#include "engine.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "config.h"
#include "decision.h"
#include "jobs.h"
#include "locks.h"
#include "migrate.h"
#include "log.h"
#include "mgmtdb.h"
#include "policy_watch.h"
#include "provision.h"
#include "util.h"

struct sb_engine {
  char *url; /* secret */
  _Atomic long id; /* registered now; 0 while the coordinator waits for the database */
  long last_id;    /* the coordinator's: the id registered last */
  sb_policy_registry_t *policies;
  sb_policy_watch_t *watch;
  sb_keyring_t *keys;
  sb_fleet_driver_t *driver;

  pthread_mutex_t mu; /* guards wake_seq with cv */
  pthread_cond_t cv;
  unsigned long wake_seq;
  _Atomic bool stopping;
  int stop_fd; /* eventfd: wakes the coordinator and sb_engine_wait */

  pthread_t coordinator;
  pthread_t *workers;
  int nworkers;
  sb_db_t *coord; /* owned by the coordinator thread after start; NULL while lost */
  _Atomic bool leader;

  pthread_mutex_t record_mu; /* the policy listener's own connection */
  sb_db_t *record_db;

  _Atomic unsigned long done, retried, dead, waiting;
  _Atomic int busy;
};

sb_fleet_driver_t *sb_fleet_driver_open(sb_error_t *err) {
  const char *name = sb_config()->fleet_driver;
  if (strcmp(name, "local") == 0) {
    char *base = sb_cluster_base_dir(err);
    if (!base) return NULL;
    sb_fleet_driver_t *d = sb_fleet_local_new(base, err);
    free(base);
    return d;
  }
  sb_error_set(err, "unknown fleet_driver '%s' (this build has: local)", name);
  return NULL;
}

/* ---- the policy listener: versions and refusals on record ---- */

static void record_policy(void *ud, const sb_policy_result_t *r, const char *source) {
  sb_engine_t *e = ud;
  sb_error_t err;
  bool ok = false;
  pthread_mutex_lock(&e->record_mu);
  /* A connection that broke since the last record (the database restarted meanwhile)
   * shows it only when used: then once more, on a new one. */
  for (int attempt = 0; attempt < 2 && !ok; attempt++) {
    if (e->record_db && PQstatus(e->record_db->conn) != CONNECTION_OK) {
      sb_db_free(e->record_db);
      e->record_db = NULL;
    }
    if (!e->record_db) e->record_db = sb_db_connect(e->url, NULL, "solobase policies", &err);
    if (!e->record_db) break;
    ok = sb_decision_record_version(e->record_db, r, source, &err) == 0;
    if (!ok && PQstatus(e->record_db->conn) == CONNECTION_OK) break;
  }
  if (!ok) sb_warn("policy", "cannot record %s version %.12s: %s", r->name, r->sha256, err.msg);
  pthread_mutex_unlock(&e->record_mu);
}

/* The first line of a libpq message (later lines are hints), for a one-line log. */
static void one_line(const char *msg, char *buf, size_t len) {
  size_t n = strcspn(msg, "\n");
  while (n && msg[n - 1] == ' ') n--;
  snprintf(buf, len, "%.*s", (int)n, n ? msg : "the connection was lost");
}

/* ---- workers ---- */

static void wake_workers(sb_engine_t *e) {
  pthread_mutex_lock(&e->mu);
  e->wake_seq++;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

static unsigned long wake_seen(sb_engine_t *e) {
  pthread_mutex_lock(&e->mu);
  unsigned long seen = e->wake_seq;
  pthread_mutex_unlock(&e->mu);
  return seen;
}

/* Sleeps until woken (after `seen`) or `ms` passed. */
static void idle(sb_engine_t *e, unsigned long seen, int ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  pthread_mutex_lock(&e->mu);
  while (e->wake_seq == seen && !atomic_load(&e->stopping))
    if (pthread_cond_timedwait(&e->cv, &e->mu, &until) == ETIMEDOUT) break;
  pthread_mutex_unlock(&e->mu);
}

/* Waits for the database (woken early when the coordinator is back); NULL when
 * stopping. */
static sb_db_t *connect_retrying(sb_engine_t *e, const char *app) {
  sb_error_t err;
  for (int delay = 1; !atomic_load(&e->stopping); delay = delay < 30 ? delay * 2 : 30) {
    unsigned long seen = wake_seen(e);
    sb_db_t *db = sb_db_connect(e->url, NULL, app, &err);
    if (db) return db;
    sb_warn("engine", "%s: %s; retrying in %d s", app, err.msg, delay);
    idle(e, seen, delay * 1000);
  }
  return NULL;
}

typedef struct worker {
  sb_engine_t *e;
  char app[64];
  sb_db_t *db; /* NULL while disconnected */
  long held;   /* the engine id whose liveness lock db holds (sb_engine_attach); 0: none */
} worker_t;

static void worker_disconnect(worker_t *w) {
  sb_db_free(w->db);
  w->db = NULL;
  w->held = 0;
}

/* Readies w to claim: a connection holding the lock of the engine's current id. False
 * while the engine has no id (the coordinator waits for the database: workers pause)
 * or when that failed; the caller waits a little. */
static bool worker_attach(worker_t *w) {
  sb_engine_t *e = w->e;
  long id = atomic_load(&e->id);
  if (id && w->db && w->held == id) return true;
  sb_error_t err;
  if (w->db && w->held) {
    /* Whatever this worker ran under the old id is recorded: let the id go, so that it
     * is seen stopped and the rest of its jobs recovered. */
    if (sb_engine_detach(w->db, w->held, &err) == 0) w->held = 0;
    else worker_disconnect(w);
  }
  if (!id) return false;
  if (!w->db && !(w->db = sb_db_connect(e->url, NULL, w->app, &err))) {
    sb_warn("engine", "%s: %s", w->app, err.msg);
    return false;
  }
  int rc = sb_engine_attach(w->db, id, &err);
  if (rc == 1) w->held = id;
  if (rc < 0) {
    sb_warn("engine", "%s: attaching to engine %ld: %s", w->app, id, err.msg);
    if (PQstatus(w->db->conn) != CONNECTION_OK) worker_disconnect(w);
  }
  /* rc 0: the id is being given up; the coordinator is about to register a new one. */
  return rc == 1;
}

/* Records a job's outcome under the id it was claimed under, reconnecting if the
 * connection went away meanwhile: the job must not stay 'running' under a live
 * engine. When it was recovered meanwhile, its new run decides and this changes
 * nothing. A dead job's instance is given up in the same transaction
 * (sb_fleet_job_dead, with ctx). */
static void finish(worker_t *w, sb_fleet_ctx_t *ctx, const sb_job_t *job, long claimed_by,
                   sb_job_outcome_t outcome, const char *error, int delay) {
  sb_error_t err;
  for (int tries = 0; tries < 20; tries++) {
    if (!w->db && !(w->db = connect_retrying(w->e, w->app))) return;
    ctx->db = w->db;
    if (sb_jobs_finish(w->db, claimed_by, job, outcome, error, delay, sb_fleet_job_dead, ctx,
                       &err) == 0)
      return;
    sb_warn("engine", "recording job %s: %s", job->id, err.msg);
    if (PQstatus(w->db->conn) == CONNECTION_OK) w->db->tx_depth = 0;
    else worker_disconnect(w);
    usleep(200000);
  }
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  sb_engine_t *e = w->e;
  sb_error_t err;
  sb_policy_engine_t *pe = sb_policy_engine_new(e->policies, &err);
  if (!pe) sb_error("engine", "%s: %s", w->app, err.msg);
  while (pe && !atomic_load(&e->stopping)) {
    unsigned long seen = wake_seen(e);
    if (!worker_attach(w)) {
      idle(e, seen, 1000);
      continue;
    }
    sb_job_t job;
    long claimed_by = w->held;
    int got = sb_jobs_claim(w->db, claimed_by, &job, &err);
    if (got < 0) {
      sb_warn("engine", "%s: claiming a job: %s", w->app, err.msg);
      if (PQstatus(w->db->conn) != CONNECTION_OK) worker_disconnect(w);
      idle(e, seen, 1000);
      continue;
    }
    if (got == 0) {
      idle(e, seen, 1000);
      continue;
    }
    atomic_fetch_add(&e->busy, 1);
    sb_fleet_ctx_t ctx = {w->db, pe, e->driver, e->keys, "engine"};
    int delay = 0;
    sb_error_clear(&err);
    uint64_t t0 = sb_now_ns();
    sb_job_outcome_t outcome = sb_fleet_run_job(&ctx, &job, &delay, &err);
    if (w->db->tx_depth > 0) { /* a handler that failed mid-transaction */
      sb_error_t e2;
      while (w->db->tx_depth > 0) sb_db_rollback(w->db, &e2);
    }
    sb_debug("engine", "job %s (%s) %s in %.1f ms", job.id, job.kind,
             outcome == SB_JOB_DONE ? "done" : outcome == SB_JOB_WAIT ? "waits" : "failed",
             (double)(sb_now_ns() - t0) / 1e6);
    if (PQstatus(w->db->conn) != CONNECTION_OK) worker_disconnect(w);
    finish(w, &ctx, &job, claimed_by, outcome, err.msg[0] ? err.msg : NULL, delay);
    atomic_fetch_add(outcome == SB_JOB_DONE ? &e->done
                     : outcome == SB_JOB_WAIT ? &e->waiting
                     : (outcome == SB_JOB_FAIL || job.attempts >= job.max_attempts) ? &e->dead
                                                                                    : &e->retried,
                     1);
    atomic_fetch_sub(&e->busy, 1);
    sb_job_clear(&job);
  }
  sb_policy_engine_free(pe);
  sb_db_free(w->db);
  free(w);
  return NULL;
}

/* ---- coordinator ---- */

/* Claims each due schedule once and queues its job, in one transaction. True when a
 * job was queued. */
static bool run_schedules(sb_db_t *db) {
  sb_error_t err;
  bool queued = false;
  for (int i = 0; i < 16; i++) {
    if (sb_db_begin(db, &err) != 0) return queued;
    PGresult *res = sb_db_query(
        db,
        "UPDATE schedules SET last_run_at = now(), "
        "next_run_at = now() + make_interval(secs => interval_seconds) "
        "WHERE name = (SELECT name FROM schedules WHERE enabled AND next_run_at <= now() "
        "ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING name, job_kind",
        0, NULL, &err);
    if (!res || PQntuples(res) == 0) {
      if (res) PQclear(res);
      sb_db_rollback(db, NULL);
      if (!res) sb_warn("scheduler", "%s", err.msg);
      return queued;
    }
    char dedupe[96];
    snprintf(dedupe, sizeof dedupe, "schedule:%s", PQgetvalue(res, 0, 0));
    sb_job_enqueue_t j = {.kind = PQgetvalue(res, 0, 1), .dedupe_key = dedupe, .max_attempts = 3};
    bool created = false;
    int rc = sb_jobs_enqueue(db, &j, NULL, &created, &err);
    sb_debug("scheduler", "schedule %s: %s", PQgetvalue(res, 0, 0),
             created ? "queued" : "previous run still queued");
    PQclear(res);
    if (rc != 0 || sb_db_commit(db, &err) != 0) {
      sb_db_rollback(db, NULL);
      sb_warn("scheduler", "%s", err.msg);
      return queued;
    }
    queued = queued || created;
  }
  return queued;
}

/* Reconnecting backs off from the first to the second (ms): a restart is noticed within
 * seconds, a long outage costs a connection attempt every few seconds. */
enum { REJOIN_FIRST_MS = 250, REJOIN_MAX_MS = 8000 };

/* Registers a new engine on db, which becomes the coordination connection, and listens
 * for queued jobs. On failure the caller frees db (and with it any lock taken: a row
 * left behind is seen stopped). */
static int coord_join(sb_engine_t *e, sb_db_t *db, sb_error_t *err) {
  long id;
  if (sb_engine_register(db, &id, err) != 0) return -1;
  /* Queued jobs are announced on sb_jobs (core/jobs.c, schema/007_jobs_notify.sql). */
  if (sb_db_exec_params(db, "LISTEN sb_jobs", 0, NULL, err) != 0) return -1;
  e->coord = db;
  e->last_id = id;
  atomic_store(&e->id, id);
  return 0;
}

/* The coordination connection broke, and the liveness lock and scheduler leadership
 * went with it. The id is given up (workers stop claiming; any engine may recover the
 * id's jobs once no worker holds it), and so is `maint`, which shared the fate. */
static void coord_lost(sb_engine_t *e, sb_db_t **maint) {
  char why[256];
  one_line(PQerrorMessage(e->coord->conn), why, sizeof why);
  atomic_store(&e->id, 0);
  atomic_store(&e->leader, false);
  sb_db_free(e->coord);
  e->coord = NULL;
  sb_db_free(*maint);
  *maint = NULL;
  wake_workers(e); /* idle ones let the id go now */
  sb_error("engine", "lost the coordination connection (%s): engine %ld takes no new jobs; "
                     "reconnecting", why, e->last_id);
}

/* Waits for the database, then joins it as a new engine. False when stopping. */
static bool coord_rejoin(sb_engine_t *e) {
  long old = e->last_id;
  uint64_t since = sb_now_ns(), said_at = 0;
  sb_error_t err;
  char said[sizeof err.msg] = "";
  for (int delay = REJOIN_FIRST_MS; !atomic_load(&e->stopping);
       delay = delay * 2 < REJOIN_MAX_MS ? delay * 2 : REJOIN_MAX_MS) {
    sb_db_t *db = sb_db_connect(e->url, NULL, "solobase coordinator", &err);
    if (db && coord_join(e, db, &err) == 0) {
      sb_info("engine", "reconnected after %.1f s: engine %ld continues as engine %ld",
              (double)(sb_now_ns() - since) / 1e9, old, e->last_id);
      wake_workers(e);
      return true;
    }
    sb_db_free(db);
    /* Said when the reason changes, else once a minute. */
    uint64_t now = sb_now_ns();
    if (strcmp(err.msg, said) != 0 || now - said_at >= 60000000000ull) {
      sb_warn("engine", "waiting for the database: %s", err.msg);
      snprintf(said, sizeof said, "%s", err.msg);
      said_at = now;
    }
    struct pollfd fd = {e->stop_fd, POLLIN, 0};
    poll(&fd, 1, delay);
  }
  return false;
}

static void *coordinator_main(void *arg) {
  sb_engine_t *e = arg;
  sb_error_t err;
  sb_db_t *maint = NULL;
  uint64_t last_tick = 0, last_reap = 0, last_seen = 0;
  while (!atomic_load(&e->stopping)) {
    if (!e->coord) {
      if (!coord_rejoin(e)) break;
      /* At once: leadership, and the recovery of the old id (once no worker holds it). */
      last_tick = last_reap = last_seen = 0;
    }
    if (PQstatus(e->coord->conn) != CONNECTION_OK) {
      coord_lost(e, &maint);
      continue;
    }
    struct pollfd fds[2] = {{PQsocket(e->coord->conn), POLLIN, 0}, {e->stop_fd, POLLIN, 0}};
    int n = poll(fds, 2, 500);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents) {
      if (!PQconsumeInput(e->coord->conn)) {
        coord_lost(e, &maint);
        continue;
      }
      PGnotify *nt;
      bool any = false;
      while ((nt = PQnotifies(e->coord->conn))) { /* sb_jobs: a job was queued */
        any = true;
        PQfreemem(nt);
      }
      if (any) wake_workers(e);
    }
    /* The periodic work, on a one-second tick. */
    uint64_t now = sb_now_ns();
    if (now - last_tick < 1000000000ull) continue;
    last_tick = now;
    if (!maint && !(maint = sb_db_connect(e->url, NULL, "solobase maintenance", &err))) {
      sb_warn("engine", "maintenance connection: %s", err.msg);
      continue;
    }
    if (!atomic_load(&e->leader)) {
      const char *key[] = {SB_LOCK_SCHEDULER};
      PGresult *res = sb_db_query(e->coord, "SELECT pg_try_advisory_lock($1::bigint)", 1, key, &err);
      if (res && PQgetvalue(res, 0, 0)[0] == 't') {
        atomic_store(&e->leader, true);
        sb_info("scheduler", "engine %ld leads the scheduler", e->last_id);
        sb_fleet_ctx_t ctx = {maint, NULL, e->driver, e->keys, "engine"};
        if (e->driver && sb_fleet_restart_servers(&ctx, &err) != 0)
          sb_warn("fleet", "restarting servers: %s", err.msg);
      }
      if (res) PQclear(res);
    }
    if (atomic_load(&e->leader) && run_schedules(maint)) wake_workers(e);
    if (now - last_reap >= 3000000000ull) {
      last_reap = now;
      int requeued = 0;
      if (sb_jobs_requeue_orphans(maint, &requeued, &err) != 0)
        sb_warn("engine", "recovering jobs of stopped engines: %s", err.msg);
      if (requeued) wake_workers(e);
    }
    if (now - last_seen >= 30000000000ull) {
      last_seen = now;
      char id[32];
      snprintf(id, sizeof id, "%ld", e->last_id);
      const char *p[] = {id};
      sb_db_exec_params(maint, "UPDATE engines SET last_seen_at = now() WHERE id = $1", 1, p, NULL);
    }
    if (PQstatus(maint->conn) != CONNECTION_OK) {
      sb_db_free(maint);
      maint = NULL;
    }
  }
  sb_db_free(maint);
  return NULL;
}

/* ---- life cycle ---- */

sb_engine_t *sb_engine_start(sb_error_t *err) {
  sb_engine_t *e = sb_xcalloc(1, sizeof *e);
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  pthread_mutex_init(&e->record_mu, NULL);
  e->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!(e->url = sb_mgmtdb_url(err))) goto fail;
  if (!(e->coord = sb_db_connect(e->url, NULL, "solobase coordinator", err))) goto fail;
  int pending = sb_migrate_pending(e->coord, sb_config()->schema_dir, err);
  if (pending < 0) goto fail;
  if (pending > 0) {
    sb_error_set(err, "the management database has %d pending migration%s; run `solobase db "
                      "migrate` first", pending, pending == 1 ? "" : "s");
    goto fail;
  }
  if (!(e->keys = sb_keyring_load(err))) goto fail;
  if (!(e->driver = sb_fleet_driver_open(err))) goto fail;
  sb_policy_limits_t limits = {sb_config()->policy_instruction_budget,
                               (size_t)sb_config()->policy_memory_limit_mb << 20};
  e->policies = sb_policy_registry_new(sb_config()->policies_dir, &limits);
  sb_policy_registry_set_listener(e->policies, record_policy, e);
  sb_policy_report_t rep;
  if (sb_policy_registry_reload(e->policies, &rep, err) != 0) goto fail;
  if (!(e->watch = sb_policy_watch_start(e->policies, err))) goto fail;
  if (coord_join(e, e->coord, err) != 0) goto fail;
  char interval[32];
  snprintf(interval, sizeof interval, "%ld", sb_config()->health_check_interval_s);
  const char *ip[] = {interval};
  if (sb_db_exec_params(e->coord,
                        "UPDATE schedules SET interval_seconds = $1::int, next_run_at = "
                        "least(next_run_at, now() + make_interval(secs => $1::int)) "
                        "WHERE name = 'health_checks' AND interval_seconds <> $1::int",
                        1, ip, err) != 0)
    goto fail;
  e->nworkers = (int)sb_config()->workers;
  e->workers = sb_xcalloc((size_t)e->nworkers, sizeof *e->workers);
  for (int i = 0; i < e->nworkers; i++) {
    worker_t *w = sb_xcalloc(1, sizeof *w);
    w->e = e;
    snprintf(w->app, sizeof w->app, "solobase worker %d", i + 1);
    pthread_create(&e->workers[i], NULL, worker_main, w);
  }
  pthread_create(&e->coordinator, NULL, coordinator_main, e);
  sb_info("engine", "engine %ld started: %d workers, fleet driver %s, policies from %s",
          e->last_id, e->nworkers, e->driver->name, sb_config()->policies_dir);
  return e;
fail:
  sb_policy_watch_stop(e->watch);
  sb_policy_registry_free(e->policies);
  if (e->driver) e->driver->free(e->driver);
  sb_keyring_free(e->keys);
  sb_db_free(e->coord);
  if (e->url) explicit_bzero(e->url, strlen(e->url));
  free(e->url);
  close(e->stop_fd);
  free(e);
  return NULL;
}

void sb_engine_request_stop(sb_engine_t *e) {
  atomic_store(&e->stopping, true);
  uint64_t one = 1;
  ssize_t r = write(e->stop_fd, &one, sizeof one); /* async-signal-safe */
  (void)r;
}

void sb_engine_reload_policies(sb_engine_t *e) { sb_policy_watch_trigger(e->watch); }

void sb_engine_wait(sb_engine_t *e) {
  struct pollfd fd = {e->stop_fd, POLLIN, 0};
  while (!atomic_load(&e->stopping)) poll(&fd, 1, 1000);
}

void sb_engine_free(sb_engine_t *e) {
  if (!e) return;
  sb_engine_request_stop(e);
  wake_workers(e);
  for (int i = 0; i < e->nworkers; i++) pthread_join(e->workers[i], NULL);
  pthread_join(e->coordinator, NULL);
  sb_error_t err;
  /* Without a coordination connection the id is gone already (recovered as any dead
   * engine's). */
  if (e->coord && sb_engine_unregister(e->coord, e->last_id, &err) != 0)
    sb_warn("engine", "unregistering: %s", err.msg);
  sb_info("engine", "engine %ld stopped (%lu jobs done)", e->last_id, atomic_load(&e->done));
  sb_policy_watch_stop(e->watch);
  sb_db_free(e->coord);
  sb_db_free(e->record_db);
  sb_policy_registry_free(e->policies);
  e->driver->free(e->driver);
  sb_keyring_free(e->keys);
  free(e->workers);
  explicit_bzero(e->url, strlen(e->url));
  free(e->url);
  close(e->stop_fd);
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  pthread_mutex_destroy(&e->record_mu);
  free(e);
}

void sb_engine_stats(sb_engine_t *e, sb_engine_stats_t *out) {
  out->engine_id = atomic_load(&e->id);
  out->leader = atomic_load(&e->leader);
  out->jobs_done = atomic_load(&e->done);
  out->jobs_retried = atomic_load(&e->retried);
  out->jobs_dead = atomic_load(&e->dead);
  out->jobs_waiting = atomic_load(&e->waiting);
  out->workers_busy = atomic_load(&e->busy);
  out->workers = e->nworkers;
  out->policy_reloads = e->watch ? sb_policy_watch_reloads(e->watch) : 0;
}

sb_policy_registry_t *sb_engine_policies(sb_engine_t *e) { return e->policies; }
sb_keyring_t *sb_engine_keys(sb_engine_t *e) { return e->keys; }
sb_fleet_driver_t *sb_engine_driver(sb_engine_t *e) { return e->driver; }
const char *sb_engine_db_url(sb_engine_t *e) { return e->url; }

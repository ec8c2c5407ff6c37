/*
 * test_provision.c: the provisioning engine end to end, on real PostgreSQL clusters of
 * the local fleet driver, run by real `solobase serve` processes.
 *
 *   capacity     200 concurrent requests onto servers of max_databases 5, served by two
 *                engines: no server over capacity, new servers opened at the policy's
 *                threshold, counters equal to row counts, both engines ran jobs and no
 *                job ran twice, tenants isolated (directly and through PgBouncer).
 *   kill -9      an engine killed at random points while provisioning, restarted: every
 *                instance active or failed with a reason, none duplicated, every tenant
 *                database on its server exactly once, counters exact.
 *   lifecycle    suspend ends sessions and refuses logins; resume; deprovision takes a
 *                final backup, drops the database and role and gives the place back.
 *   failed       an instance whose server refuses fails with a reason and gives its
 *                place back; deleting it later does not give it back again.
 *   delete race  20 requests each deleted while provisioning: every one ends deleted
 *                with no database or role left on the server, counters exact; a
 *                deletion waits for the provisioning job that runs.
 *   dead job     a provisioning job that dies (a placement policy that raises) fails its
 *                instance with the job's error; its retry and death are events.
 *   health       a server that stops answering is marked degraded (with an event), the
 *                engine starts it again and it recovers; a degraded server gets no new
 *                databases.
 *   reload       a policy edited to a broken version is refused while the engine runs
 *                (a policy.reload_failed event), and the engine keeps working.
 *
 * Each test has its own management database; the servers the engines create are
 * destroyed at the end, even when the test fails (and tests/support/stop-servers stops
 * anything left when ctest ends).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "engine.h"
#include "mgmtdb.h"
#include "provision.h"
#include "sbtest.h"
#include "util.h"

#define MAX_ENGINES 2

static char work[64];        /* temp dir: policies copy, engine logs */
static char *dbname, *url;   /* this test's management database */
static sb_db_t *db;
static sb_keyring_t *keys;
static sb_policy_registry_t *policies;
static sb_fleet_driver_t *driver;
static pid_t engines[MAX_ENGINES];
static int engine_log_seq;

/* ---- engines -------------------------------------------------------------------- */

static pid_t start_engine(void) {
  char log[128];
  snprintf(log, sizeof log, "%s/engine-%d.log", work, engine_log_seq++);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("DATABASE_URL", url, 1);
    char *pol = sb_xasprintf("%s/policies", work);
    setenv("SOLOBASE_POLICIES_DIR", pol, 1);
    setenv("SOLOBASE_WORKERS", "4", 1);
    setenv("SOLOBASE_LISTEN", "127.0.0.1:0", 1); /* two engines: a free port each */
    setenv("SOLOBASE_HEALTH_CHECK_INTERVAL", "2", 1);
    setenv("SOLOBASE_LOG_LEVEL", "info", 1);
    execl(getenv("SOLOBASE_BIN"), "solobase", "serve", (char *)NULL);
    _exit(127);
  }
  return pid;
}

static void stop_engine(pid_t *pid, int sig) {
  if (*pid <= 0) return;
  kill(*pid, sig);
  int status;
  waitpid(*pid, &status, 0);
  *pid = 0;
}

static void stop_engines(void) {
  for (int i = 0; i < MAX_ENGINES; i++) stop_engine(&engines[i], SIGTERM);
}

/* ---- database helpers -------------------------------------------------------------- */

static char *scalar(const char *sql) { return sbtest_scalar(db, sql, 0, NULL); }
static long scalar_long(const char *sql) {
  char *v = scalar(sql);
  long n = atol(v);
  free(v);
  return n;
}

/* Waits up to `seconds` for `sql` to return 't'. */
static bool wait_for(const char *sql, int seconds) {
  for (int i = 0; i < seconds * 10; i++) {
    char *v = scalar(sql);
    bool yes = strcmp(v, "t") == 0;
    free(v);
    if (yes) return true;
    usleep(100000);
  }
  return false;
}

static void dump_logs(void) {
  char *cmd = sb_xasprintf("tail -n 30 %s/engine-*.log >&2", work);
  if (system(cmd) != 0) fprintf(stderr, "(no engine logs)\n");
  free(cmd);
}

#define WAIT_FOR(sql, secs)                                     \
  do {                                                          \
    if (!wait_for(sql, secs)) {                                 \
      dump_logs();                                              \
      fail_msg("timed out waiting for: %s", sql);               \
    }                                                           \
  } while (0)

static char *new_user(int n) {
  char email[64];
  snprintf(email, sizeof email, "user%d@example.com", n);
  const char *p[] = {email};
  return sbtest_scalar(db, "INSERT INTO users (email) VALUES ($1) RETURNING id", 1, p);
}

static sb_fleet_ctx_t request_ctx(sb_db_t *conn, sb_policy_engine_t *pe) {
  sb_fleet_ctx_t ctx = {conn, pe, NULL, keys, "test"};
  return ctx;
}

static char *provision(const char *user, const char *plan, const char *sub) {
  sb_error_t err;
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, &err);
  sb_fleet_ctx_t ctx = request_ctx(db, pe);
  sb_provision_request_t req = {user, plan, sub, sub, NULL};
  sb_provision_result_t out;
  if (sb_provision_request(&ctx, &req, &out, &err) != 0) fail_msg("request %s: %s", sub, err.msg);
  sb_policy_engine_free(pe);
  return sb_xstrdup(out.instance_id);
}

/* Runs one queued job in this process, as an engine's worker does: claimed under an
 * engine id of its own, run, its outcome recorded (a dead job's instance given up). */
static void run_job_here(const char *job_id) {
  sb_error_t err;
  sb_db_t *life = sb_db_connect(url, NULL, "test engine", &err);
  assert_non_null(life);
  long eid;
  assert_int_equal(sb_engine_register(life, &eid, &err), 0);
  char e[32];
  snprintf(e, sizeof e, "%ld", eid);
  const char *p[] = {job_id, e};
  PGresult *res = sbtest_query(db,
                               "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
                               "locked_by = $2, locked_at = now() WHERE id = $1 AND status = 'queued' "
                               "RETURNING id, kind, coalesce(instance_id::text, ''), "
                               "coalesce(shared_rds_id::text, ''), payload, attempts, max_attempts",
                               2, p);
  assert_int_equal(PQntuples(res), 1);
  sb_job_t job = {0};
  snprintf(job.id, sizeof job.id, "%s", PQgetvalue(res, 0, 0));
  snprintf(job.kind, sizeof job.kind, "%s", PQgetvalue(res, 0, 1));
  snprintf(job.instance_id, sizeof job.instance_id, "%s", PQgetvalue(res, 0, 2));
  snprintf(job.shared_rds_id, sizeof job.shared_rds_id, "%s", PQgetvalue(res, 0, 3));
  job.payload = sb_xstrdup(PQgetvalue(res, 0, 4));
  job.attempts = atoi(PQgetvalue(res, 0, 5));
  job.max_attempts = atoi(PQgetvalue(res, 0, 6));
  PQclear(res);
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, &err);
  sb_fleet_ctx_t ctx = {db, pe, driver, keys, "engine"};
  int delay = 0;
  sb_error_clear(&err);
  sb_job_outcome_t o = sb_fleet_run_job(&ctx, &job, &delay, &err);
  sb_error_t ferr;
  if (sb_jobs_finish(db, eid, &job, o, err.msg[0] ? err.msg : NULL, delay, sb_fleet_job_dead,
                     &ctx, &ferr) != 0)
    fail_msg("recording job %s: %s", job.id, ferr.msg);
  sb_job_clear(&job);
  sb_policy_engine_free(pe);
  assert_int_equal(sb_engine_unregister(life, eid, &err), 0);
  sb_db_free(life);
}

/* Every server: never over capacity, and its counter equals the instances holding a
 * place on it. */
static void assert_counters_exact(void) {
  assert_int_equal(scalar_long("SELECT count(*) FROM shared_rds_instances "
                               "WHERE current_databases > max_databases"), 0);
  PGresult *res = sbtest_query(
      db,
      "SELECT rds_instance_id, current_databases, (SELECT count(*) FROM instances i "
      "WHERE i.shared_rds_id = s.id AND i.status IN ('provisioning', 'active', 'suspended', "
      "'deleting')) FROM shared_rds_instances s",
      0, NULL);
  for (int i = 0; i < PQntuples(res); i++)
    if (strcmp(PQgetvalue(res, i, 1), PQgetvalue(res, i, 2)) != 0)
      fail_msg("server %s counts %s databases but holds %s instances", PQgetvalue(res, i, 0),
               PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
  PQclear(res);
}

/* Every tenant database and role on every server exactly once: the databases and roles
 * each server has are exactly those of the active instances placed on it. */
static void assert_databases_match(void) {
  PGresult *res = sbtest_query(db, "SELECT id FROM shared_rds_instances WHERE status = 'active'",
                               0, NULL);
  sb_fleet_ctx_t ctx = request_ctx(db, NULL);
  for (int i = 0; i < PQntuples(res); i++) {
    const char *sid = PQgetvalue(res, i, 0);
    /* The server's admin connection, through the same loader the engine uses. */
    const char *p[] = {sid};
    PGresult *srow = sbtest_query(db,
                                  "SELECT port, admin_user, admin_password_enc, secret_key_id "
                                  "FROM shared_rds_instances WHERE id = $1",
                                  1, p);
    size_t blen;
    unsigned char *blob = PQunescapeBytea((const unsigned char *)PQgetvalue(srow, 0, 2), &blen);
    char context[96], *pw = NULL;
    snprintf(context, sizeof context, "shared_rds_instances.admin_password_enc:%s", sid);
    sb_error_t err;
    assert_int_equal(sb_secret_decrypt(ctx.keys, context, PQgetvalue(srow, 0, 3), blob, blen, &pw,
                                       NULL, &err), 0);
    PQfreemem(blob);
    char *admin = sb_xasprintf("postgresql://%s:%s@127.0.0.1:%s/postgres", PQgetvalue(srow, 0, 1),
                               pw, PQgetvalue(srow, 0, 0));
    free(pw);
    PQclear(srow);
    sb_db_t *sdb = sb_db_connect(admin, NULL, "test", &err);
    free(admin);
    if (!sdb) fail_msg("server %s: %s", sid, err.msg);
    char *on_server = sbtest_scalar(sdb,
                                    "SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') "
                                    "FROM pg_database WHERE datname LIKE 'instance\\_%'",
                                    0, NULL);
    char *expected = sbtest_scalar(db,
                                   "SELECT coalesce(string_agg(database_name, ',' ORDER BY "
                                   "database_name), '') FROM instances WHERE shared_rds_id = $1 "
                                   "AND status IN ('active', 'suspended')",
                                   1, p);
    if (strcmp(on_server, expected) != 0)
      fail_msg("server %s has databases [%s], the instances there are [%s]", sid, on_server, expected);
    free(on_server);
    free(expected);
    on_server = sbtest_scalar(sdb,
                              "SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') "
                              "FROM pg_roles WHERE rolname LIKE 'user\\_%'",
                              0, NULL);
    expected = sbtest_scalar(db,
                             "SELECT coalesce(string_agg(database_user, ',' ORDER BY "
                             "database_user), '') FROM instances WHERE shared_rds_id = $1 "
                             "AND status IN ('active', 'suspended')",
                             1, p);
    if (strcmp(on_server, expected) != 0)
      fail_msg("server %s has roles [%s], the instances there are [%s]", sid, on_server, expected);
    free(on_server);
    free(expected);
    sb_db_free(sdb);
  }
  PQclear(res);
}

/* ---- setup ------------------------------------------------------------------------- */

static int setup(void **state) {
  sbtest_init();
  snprintf(work, sizeof work, "/tmp/sbtest-provision-XXXXXX");
  assert_non_null(mkdtemp(work));
  chmod(work, 0755);
  /* The policies, with new shared servers of 5 databases (the spec's 150, scaled down
   * so the test opens many servers): an operator's edit, as any other, with the
   * examples that state the number edited too (or the engine refuses the file). */
  char *cmd = sb_xasprintf("cp -r %s/policies %s/policies && sed -i "
                           "'s/^local NEW_MAX_DATABASES = 150/local NEW_MAX_DATABASES = 5/; "
                           "s/new_server = { max_databases = 150/new_server = { max_databases = 5/' "
                           "%s/policies/placement.lua",
                           SB_SOURCE_DIR, work, work);
  assert_int_equal(system(cmd), 0);
  free(cmd);
  return 0;
}

static int teardown(void **state) {
  char *cmd = sb_xasprintf("rm -rf %s", work);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", work);
  free(cmd);
  return 0;
}

/* A management database of the test's own, and what requests need. */
static int before(void **state) {
  db = sbtest_db_create("test_provision", true, &dbname);
  url = sbtest_url(dbname);
  sb_error_t err;
  free(sb_config()->database_url);
  sb_config()->database_url = sb_xstrdup(url);
  keys = sb_keyring_load(&err);
  assert_non_null(keys);
  char *pol = sb_xasprintf("%s/policies", work);
  sb_policy_limits_t limits = {1000000, (size_t)64 << 20};
  policies = sb_policy_registry_new(pol, &limits);
  free(pol);
  sb_policy_report_t rep;
  assert_int_equal(sb_policy_registry_reload(policies, &rep, &err), 0);
  driver = sb_fleet_driver_open(&err);
  assert_non_null(driver);
  PQclear(sbtest_query(db, "UPDATE plans SET max_instances = 1000", 0, NULL));
  return 0;
}

/* Stops the engines and destroys every server they made, whatever happened. */
static int after(void **state) {
  stop_engines();
  PGresult *res = sbtest_query(
      db,
      "SELECT id, 'shared' FROM shared_rds_instances UNION ALL "
      "SELECT id, 'dedicated' FROM dedicated_rds_instances",
      0, NULL);
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, NULL);
  for (int i = 0; i < PQntuples(res); i++) {
    const char *id = PQgetvalue(res, i, 0);
    const char *p[] = {id};
    char *name = sbtest_scalar(db,
                               strcmp(PQgetvalue(res, i, 1), "shared") == 0
                                   ? "SELECT rds_instance_id FROM shared_rds_instances WHERE id = $1"
                                   : "SELECT rds_instance_id FROM dedicated_rds_instances WHERE id = $1",
                               1, p);
    sb_server_t srv = {0};
    snprintf(srv.name, sizeof srv.name, "%s", name);
    srv.pooler = strcmp(PQgetvalue(res, i, 1), "shared") == 0;
    sb_error_t err;
    if (driver->server_destroy(driver, &srv, &err) != 0)
      fprintf(stderr, "destroying %s: %s\n", name, err.msg);
    free(name);
  }
  sb_policy_engine_free(pe);
  PQclear(res);
  driver->free(driver);
  sb_policy_registry_free(policies);
  sb_keyring_free(keys);
  sb_db_free(db);
  sbtest_db_drop(dbname);
  free(dbname);
  free(url);
  return 0;
}

/* ---- capacity under 200 concurrent requests ---------------------------------------- */

#define REQUESTS 200
#define THREADS 16

typedef struct requester {
  int n;
  char **users;
  int failed;
} requester_t;

static void *request_some(void *arg) {
  requester_t *r = arg;
  sb_error_t err;
  sb_db_t *conn = sb_db_connect(url, NULL, "test requester", &err);
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, &err);
  sb_fleet_ctx_t ctx = request_ctx(conn, pe);
  for (int i = r->n; i < REQUESTS; i += THREADS) {
    char sub[32];
    snprintf(sub, sizeof sub, "cap-%d", i);
    sb_provision_request_t req = {r->users[i % 20], "starter", sub, sub, NULL};
    sb_provision_result_t out;
    if (sb_provision_request(&ctx, &req, &out, &err) != 0) {
      fprintf(stderr, "request %s failed: %s\n", sub, err.msg);
      r->failed++;
    }
  }
  sb_policy_engine_free(pe);
  sb_db_free(conn);
  return NULL;
}

static void test_capacity_under_concurrency(void **state) {
  char *users[20];
  for (int i = 0; i < 20; i++) users[i] = new_user(i);
  engines[0] = start_engine();
  engines[1] = start_engine();
  pthread_t th[THREADS];
  requester_t r[THREADS];
  for (int i = 0; i < THREADS; i++) {
    r[i] = (requester_t){i, users, 0};
    pthread_create(&th[i], NULL, request_some, &r[i]);
  }
  int failed = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    failed += r[i].failed;
  }
  assert_int_equal(failed, 0);
  assert_int_equal(scalar_long("SELECT count(*) FROM instances"), REQUESTS);
  WAIT_FOR("SELECT count(*) = 200 FROM instances WHERE status = 'active'", 240);

  assert_counters_exact();
  /* 200 databases of 5 per server: 40 servers, and at most one more opened at the
   * threshold as the last ones filled. Every server but the newest is at or past 80 %. */
  long servers = scalar_long("SELECT count(*) FROM shared_rds_instances");
  assert_true(servers >= 40 && servers <= 41);
  assert_true(scalar_long("SELECT count(*) FROM shared_rds_instances "
                          "WHERE current_databases * 5 < max_databases * 4") <= 1);
  assert_int_equal(scalar_long("SELECT count(*) FROM shared_rds_instances WHERE max_databases <> 5"), 0);
  /* Nothing twice: one `created` and one `active` event per instance; every provisioning
   * job ran once, and both engines ran some. */
  assert_int_equal(scalar_long("SELECT count(*) FROM (SELECT instance_id FROM instance_events "
                               "WHERE event_type IN ('created', 'active') GROUP BY instance_id "
                               "HAVING count(*) <> 2) x"), 0);
  PGresult *twice = sbtest_query(db,
                                 "SELECT id, status, attempts, coalesce(last_error, '') FROM jobs "
                                 "WHERE kind = 'instance.provision' "
                                 "AND (status <> 'succeeded' OR attempts <> 1)",
                                 0, NULL);
  for (int i = 0; i < PQntuples(twice); i++) {
    fprintf(stderr, "job %s: %s after %s attempts: %s\n", PQgetvalue(twice, i, 0),
            PQgetvalue(twice, i, 1), PQgetvalue(twice, i, 2), PQgetvalue(twice, i, 3));
    char *cmd = sb_xasprintf("grep -h '%s' %s/engine-*.log >&2", PQgetvalue(twice, i, 0), work);
    if (system(cmd) != 0) fprintf(stderr, "(not in the engine logs)\n");
    free(cmd);
  }
  assert_int_equal(PQntuples(twice), 0);
  PQclear(twice);
  assert_int_equal(scalar_long("SELECT count(DISTINCT locked_by) FROM jobs "
                               "WHERE kind = 'instance.provision'"), 2);
  assert_databases_match();

  /* Tenant isolation, directly and through PgBouncer. */
  char *a = scalar("SELECT id FROM instances WHERE subdomain = 'cap-0'");
  const char *ap[] = {a};
  char *b_db = sbtest_scalar(db,
                             "SELECT b.database_name FROM instances a JOIN instances b "
                             "ON b.shared_rds_id = a.shared_rds_id AND b.id <> a.id "
                             "WHERE a.id = $1 LIMIT 1",
                             1, ap);
  sb_error_t err;
  sb_fleet_ctx_t ctx = request_ctx(db, NULL);
  char *a_url = sb_instance_credentials(&ctx, a, &err);
  assert_non_null(a_url);
  sb_db_t *mine = sb_db_connect(a_url, NULL, "tenant", &err);
  if (!mine) fail_msg("tenant A through PgBouncer: %s", err.msg);
  char *who = sbtest_scalar(mine, "SELECT current_user || ' ' || current_database()", 0, NULL);
  assert_non_null(strstr(who, "instance_"));
  free(who);
  sb_db_free(mine);
  assert_null(sb_db_connect(a_url, b_db, "tenant", &err));
  assert_non_null(strstr(err.msg, "permission denied"));
  /* Directly on the server's PostgreSQL port, not PgBouncer's. */
  char *direct = sbtest_scalar(db,
                               "SELECT s.port FROM instances i JOIN shared_rds_instances s "
                               "ON s.id = i.shared_rds_id WHERE i.id = $1",
                               1, ap);
  char *colon = strrchr(a_url, ':'), *slash = strrchr(a_url, '/');
  char *direct_url = sb_xasprintf("%.*s:%s%s", (int)(colon - a_url), a_url, direct, slash);
  mine = sb_db_connect(direct_url, NULL, "tenant", &err);
  if (!mine) fail_msg("tenant A directly: %s", err.msg);
  sb_db_free(mine);
  assert_null(sb_db_connect(direct_url, b_db, "tenant", &err));
  assert_non_null(strstr(err.msg, "permission denied"));
  free(direct_url), free(direct), free(a_url), free(b_db), free(a);
  for (int i = 0; i < 20; i++) free(users[i]);
}

/* ---- kill -9 ------------------------------------------------------------------------- */

static void test_kill_9_anywhere(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  unsigned seed = (unsigned)getpid();
  for (int i = 0; i < 30; i++) {
    char sub[32];
    snprintf(sub, sizeof sub, "k9-%d", i);
    free(provision(user, "starter", sub));
    if (i % 4 == 3) {
      /* Somewhere in the middle of whatever it does: kill it, start another. */
      usleep(50000 + rand_r(&seed) % 600000);
      stop_engine(&engines[0], SIGKILL);
      engines[0] = start_engine();
    }
  }
  for (int k = 0; k < 4; k++) {
    usleep(200000 + rand_r(&seed) % 800000);
    stop_engine(&engines[0], SIGKILL);
    engines[0] = start_engine();
  }
  WAIT_FOR("SELECT count(*) = 0 FROM instances WHERE status IN ('requested', 'provisioning')", 240);
  assert_int_equal(scalar_long("SELECT count(*) FROM instances WHERE status = 'failed' "
                               "AND status_reason IS NULL"), 0);
  assert_int_equal(scalar_long("SELECT count(*) FROM instances"), 30);
  assert_int_equal(scalar_long("SELECT count(*) FROM (SELECT instance_id FROM instance_events "
                               "WHERE event_type = 'active' GROUP BY instance_id "
                               "HAVING count(*) > 1) x"), 0);
  assert_counters_exact();
  assert_databases_match();
  /* The servers never went past their size even across restarts. */
  assert_int_equal(scalar_long("SELECT count(*) FROM shared_rds_instances WHERE max_databases <> 5"), 0);
  free(user);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

static void test_suspend_resume_deprovision(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  char *id = provision(user, "starter", "life");
  const char *ip[] = {id};
  char *active = sb_xasprintf("SELECT status = 'active' FROM instances WHERE id = '%s'", id);
  WAIT_FOR(active, 60);
  sb_error_t err;
  sb_fleet_ctx_t ctx = request_ctx(db, NULL);
  char *tenant_url = sb_instance_credentials(&ctx, id, &err);
  sb_db_t *session = sb_db_connect(tenant_url, NULL, "tenant", &err);
  assert_non_null(session);
  PQclear(sbtest_query(session, "CREATE TABLE notes (t text)", 0, NULL));
  PQclear(sbtest_query(session, "INSERT INTO notes VALUES ('hi')", 0, NULL));

  char job[37];
  assert_int_equal(sb_instance_suspend(&ctx, id, "payment_overdue", job, &err), 0);
  char *suspended = sb_xasprintf("SELECT status = 'suspended' AND status_reason = 'payment_overdue' "
                                 "FROM instances WHERE id = '%s'", id);
  WAIT_FOR(suspended, 60);
  /* Its open session was ended; new logins are refused. */
  assert_string_not_equal(sbtest_error_state(session, "SELECT 1", 0, NULL), "");
  sb_db_free(session);
  assert_null(sb_db_connect(tenant_url, NULL, "tenant", &err));
  /* A second suspension is refused with a clear reason, nothing changes. */
  assert_int_equal(sb_instance_suspend(&ctx, id, NULL, job, &err), -1);
  assert_string_equal(err.sqlstate, SB_ERR_CONFLICT);

  assert_int_equal(sb_instance_resume(&ctx, id, job, &err), 0);
  WAIT_FOR(active, 60);
  session = sb_db_connect(tenant_url, NULL, "tenant", &err);
  if (!session) fail_msg("after resume: %s", err.msg);
  char *note = sbtest_scalar(session, "SELECT t FROM notes", 0, NULL);
  assert_string_equal(note, "hi");
  free(note);
  sb_db_free(session);

  char *server = sbtest_scalar(db, "SELECT shared_rds_id FROM instances WHERE id = $1", 1, ip);
  const char *sp[] = {server};
  char *before_count = sbtest_scalar(db, "SELECT current_databases FROM shared_rds_instances "
                                         "WHERE id = $1", 1, sp);
  assert_int_equal(sb_instance_deprovision(&ctx, id, job, &err), 0);
  char *deleted = sb_xasprintf("SELECT status = 'deleted' FROM instances WHERE id = '%s'", id);
  WAIT_FOR(deleted, 60);
  char *after_count = sbtest_scalar(db, "SELECT current_databases FROM shared_rds_instances "
                                        "WHERE id = $1", 1, sp);
  assert_int_equal(atoi(after_count), atoi(before_count) - 1);
  /* The final backup: a pg_dump archive on disk, recorded with the policy's expiry. */
  PGresult *b = sbtest_query(db,
                             "SELECT s3_bucket || '/' || s3_key, size_bytes, "
                             "expires_at - completed_at FROM backups WHERE instance_id = $1 "
                             "AND backup_type = 'pre_delete' AND status = 'completed'",
                             1, ip);
  assert_int_equal(PQntuples(b), 1);
  assert_string_equal(PQgetvalue(b, 0, 2), "90 days");
  FILE *f = fopen(PQgetvalue(b, 0, 0), "rb");
  assert_non_null(f);
  char magic[5] = "";
  assert_int_equal(fread(magic, 1, 5, f), 5);
  assert_memory_equal(magic, "PGDMP", 5);
  fclose(f);
  PQclear(b);
  assert_null(sb_db_connect(tenant_url, NULL, "tenant", &err));
  assert_counters_exact();
  assert_databases_match();
  free(tenant_url), free(active), free(suspended), free(deleted), free(server);
  free(before_count), free(after_count), free(id), free(user);
}

/* ---- failed, then deleted: the place given back once ------------------------------------ */

static void test_failed_instance_deleted_gives_place_back_once(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  char *kept = provision(user, "starter", "kept");
  WAIT_FOR("SELECT count(*) = 1 FROM instances WHERE status = 'active'", 60);
  stop_engine(&engines[0], SIGTERM);
  /* The server refuses: its PostgreSQL is down, and nothing here starts it again. */
  char *sid = scalar("SELECT id FROM shared_rds_instances");
  char *name = scalar("SELECT rds_instance_id FROM shared_rds_instances");
  sb_server_t srv = {0};
  snprintf(srv.name, sizeof srv.name, "%s", name);
  srv.pooler = true;
  sb_error_t err;
  assert_int_equal(driver->server_stop(driver, &srv, &err), 0);
  char *id = provision(user, "starter", "doomed");
  const char *ip[] = {id};
  char *placed = sbtest_scalar(db, "SELECT status || ' ' || shared_rds_id FROM instances "
                                   "WHERE id = $1", 1, ip);
  char *want = sb_xasprintf("provisioning %s", sid);
  assert_string_equal(placed, want);
  assert_counters_exact();
  PQclear(sbtest_query(db, "UPDATE jobs SET max_attempts = 1 WHERE instance_id = $1", 1, ip));
  char *job = sbtest_scalar(db, "SELECT id FROM jobs WHERE instance_id = $1", 1, ip);
  run_job_here(job);
  assert_int_equal(scalar_long("SELECT count(*) FROM jobs WHERE status = 'dead'"), 1);
  char *reason = sbtest_scalar(db, "SELECT status || ': ' || status_reason FROM instances "
                                   "WHERE id = $1", 1, ip);
  assert_true(strncmp(reason, "failed: provisioning failed: ", 29) == 0);
  assert_counters_exact();

  /* The server answers again; deleting the failed instance leaves the counter exact. */
  sb_fleet_ctx_t ctx = request_ctx(db, NULL);
  ctx.driver = driver;
  assert_int_equal(sb_fleet_restart_servers(&ctx, &err), 0);
  char jid[37];
  assert_int_equal(sb_instance_deprovision(&ctx, id, jid, &err), 0);
  engines[0] = start_engine();
  char *deleted = sb_xasprintf("SELECT status = 'deleted' FROM instances WHERE id = '%s'", id);
  WAIT_FOR(deleted, 60);
  assert_counters_exact();
  assert_int_equal(scalar_long("SELECT current_databases FROM shared_rds_instances"), 1);
  assert_databases_match();
  free(deleted), free(reason), free(job), free(want), free(placed), free(id);
  free(name), free(sid), free(kept), free(user);
}

/* ---- delete at once, while provisioning ---------------------------------------------------- */

#define RACES 20

typedef struct racer {
  int n;
  const char *user;
  char error[300];
} racer_t;

/* Requests an instance and deletes it once its provisioning job runs, 0 to 95 ms later
 * (a different delay for each), so deletions land while the database is being made. */
static void *request_and_delete(void *arg) {
  racer_t *r = arg;
  sb_error_t err;
  sb_db_t *conn = sb_db_connect(url, NULL, "test racer", &err);
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, &err);
  sb_fleet_ctx_t ctx = request_ctx(conn, pe);
  char sub[32], job[37];
  snprintf(sub, sizeof sub, "race-%d", r->n);
  sb_provision_request_t req = {r->user, "starter", sub, sub, NULL};
  sb_provision_result_t out;
  if (sb_provision_request(&ctx, &req, &out, &err) != 0) {
    snprintf(r->error, sizeof r->error, "%s: %s", sub, err.msg);
    goto done;
  }
  const char *jp[] = {out.job_id};
  for (int i = 0; i < 5000; i++) {
    char *st = sbtest_scalar(conn, "SELECT status FROM jobs WHERE id = $1", 1, jp);
    bool queued = strcmp(st, "queued") == 0;
    free(st);
    if (!queued) break;
    usleep(2000);
  }
  usleep((useconds_t)(r->n * 5000));
  if (sb_instance_deprovision(&ctx, out.instance_id, job, &err) != 0)
    snprintf(r->error, sizeof r->error, "%s: %s", sub, err.msg);
done:
  sb_policy_engine_free(pe);
  sb_db_free(conn);
  return NULL;
}

static void test_delete_while_provisioning(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  engines[1] = start_engine();
  char *base = provision(user, "starter", "base");
  WAIT_FOR("SELECT count(*) = 1 FROM instances WHERE status = 'active'", 60);
  /* Room for all of them on the one server, so each is provisioning when deleted. */
  PQclear(sbtest_query(db, "UPDATE shared_rds_instances SET max_databases = 100", 0, NULL));
  pthread_t th[RACES];
  racer_t r[RACES];
  for (int i = 0; i < RACES; i++) {
    r[i] = (racer_t){.n = i, .user = user};
    pthread_create(&th[i], NULL, request_and_delete, &r[i]);
  }
  for (int i = 0; i < RACES; i++) {
    pthread_join(th[i], NULL);
    if (r[i].error[0]) fail_msg("%s", r[i].error);
  }
  WAIT_FOR("SELECT count(*) = 20 FROM instances WHERE subdomain LIKE 'race-%' "
           "AND status = 'deleted'", 120);
  assert_int_equal(scalar_long("SELECT count(*) FROM jobs WHERE status = 'dead'"), 0);
  assert_counters_exact();
  assert_int_equal(scalar_long("SELECT current_databases FROM shared_rds_instances"), 1);
  assert_databases_match();

  /* The same, step by step: while a provisioning job runs (held by an engine of this
   * process that lives), its instance's deletion waits for it. */
  stop_engines();
  char *id = provision(user, "starter", "held");
  const char *ip[] = {id};
  char *pjob = sbtest_scalar(db, "SELECT id FROM jobs WHERE instance_id = $1", 1, ip);
  sb_error_t err;
  sb_db_t *life = sb_db_connect(url, NULL, "test engine", &err);
  assert_non_null(life);
  long eid;
  assert_int_equal(sb_engine_register(life, &eid, &err), 0);
  char e[32];
  snprintf(e, sizeof e, "%ld", eid);
  const char *hp[] = {pjob, e};
  PQclear(sbtest_query(db, "UPDATE jobs SET status = 'running', attempts = 1, locked_by = $2 "
                           "WHERE id = $1", 2, hp));
  sb_fleet_ctx_t ctx = request_ctx(db, NULL);
  char djob[37];
  assert_int_equal(sb_instance_deprovision(&ctx, id, djob, &err), 0);
  run_job_here(djob);
  char *status = sbtest_scalar(db, "SELECT status FROM instances WHERE id = $1", 1, ip);
  assert_string_equal(status, "deleting");
  free(status);
  /* The provisioning job's next run sees the deletion and makes nothing; then the
   * deletion goes ahead. */
  PQclear(sbtest_query(db, "UPDATE jobs SET status = 'queued', locked_by = NULL WHERE id = $1",
                       1, hp));
  assert_int_equal(sb_engine_unregister(life, eid, &err), 0);
  sb_db_free(life);
  run_job_here(pjob);
  run_job_here(djob);
  status = sbtest_scalar(db, "SELECT status FROM instances WHERE id = $1", 1, ip);
  assert_string_equal(status, "deleted");
  assert_counters_exact();
  assert_int_equal(scalar_long("SELECT current_databases FROM shared_rds_instances"), 1);
  assert_databases_match();
  free(status), free(pjob), free(id), free(base), free(user);
}

/* ---- a provisioning job that dies ---------------------------------------------------------- */

static void test_dead_provision_job_fails_instance(void **state) {
  char *user = new_user(1);
  /* Requested (no server yet), with the new server it asked for taken away: the
   * engine's placement is all that can happen to it. */
  char *id = provision(user, "starter", "unplaceable");
  const char *ip[] = {id};
  PQclear(sbtest_query(db, "DELETE FROM jobs WHERE kind = 'server.create'", 0, NULL));
  PQclear(sbtest_query(db, "UPDATE jobs SET max_attempts = 2 WHERE instance_id = $1", 1, ip));
  /* The engine's placement policy raises on an empty fleet (its examples still hold). */
  char *pol = sb_xasprintf("%s/policies/placement.lua", work);
  sb_error_t err;
  char *good = sb_read_file(pol, NULL, &err);
  assert_non_null(good);
  const char *anchor = "function M.place(input)\n";
  char *at = strstr(good, anchor);
  assert_non_null(at);
  char *broken = sb_xasprintf("%.*s%s  if #(input.servers or {}) == 0 and not input.opening then\n"
                              "    error(\"placement is broken\")\n  end\n%s",
                              (int)(at - good), good, anchor, at + strlen(anchor));
  assert_int_equal(sb_write_file_atomic(pol, broken, strlen(broken), 0644, &err), 0);
  engines[0] = start_engine();
  char *failed = sb_xasprintf("SELECT status = 'failed' FROM instances WHERE id = '%s'", id);
  bool ended = wait_for(failed, 60);
  stop_engine(&engines[0], SIGTERM);
  assert_int_equal(sb_write_file_atomic(pol, good, strlen(good), 0644, &err), 0);
  if (!ended) {
    dump_logs();
    fail_msg("the instance did not fail");
  }
  char *reason = sbtest_scalar(db, "SELECT status_reason FROM instances WHERE id = $1", 1, ip);
  if (!strstr(reason, "provisioning failed: ") || !strstr(reason, "placement is broken"))
    fail_msg("reason: %s", reason);
  /* Its first failure was retried, with an event; then it died, with an event. */
  PGresult *ev = sbtest_query(db,
                              "SELECT event_type, payload->>'attempt', payload->>'error', "
                              "payload->>'run_at' IS NOT NULL FROM instance_events "
                              "WHERE instance_id = $1 AND event_type LIKE 'job.%' ORDER BY seq",
                              1, ip);
  assert_int_equal(PQntuples(ev), 2);
  assert_string_equal(PQgetvalue(ev, 0, 0), "job.retry");
  assert_string_equal(PQgetvalue(ev, 0, 1), "1");
  assert_non_null(strstr(PQgetvalue(ev, 0, 2), "placement is broken"));
  assert_string_equal(PQgetvalue(ev, 0, 3), "t");
  assert_string_equal(PQgetvalue(ev, 1, 0), "job.dead");
  PQclear(ev);
  char *fails = sbtest_scalar(db, "SELECT count(*) FROM instance_events WHERE instance_id = $1 "
                                 "AND event_type = 'failed'", 1, ip);
  assert_string_equal(fails, "1");
  free(fails);
  assert_counters_exact();
  free(reason), free(failed), free(broken), free(good), free(pol), free(id), free(user);
}

/* ---- health checks -------------------------------------------------------------------- */

static void test_failing_server_is_degraded_and_recovers(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  char *id = provision(user, "starter", "health");
  WAIT_FOR("SELECT count(*) = 1 FROM instances WHERE status = 'active'", 60);
  char *sid = scalar("SELECT id FROM shared_rds_instances LIMIT 1");
  char *name = scalar("SELECT rds_instance_id FROM shared_rds_instances LIMIT 1");
  /* Its PostgreSQL stops at once, as `pg_ctl stop -m immediate` stops it (SIGQUIT to the
   * postmaster); PgBouncer stays up. */
  sb_error_t err;
  char *base = sb_cluster_base_dir(&err);
  assert_non_null(base);
  char *pidfile = sb_xasprintf("%s/servers/%s/data/postmaster.pid", base, name);
  char *text = sb_read_file(pidfile, NULL, &err);
  assert_non_null(text);
  pid_t pm = (pid_t)atol(text);
  assert_true(pm > 0);
  assert_int_equal(kill(pm, SIGQUIT), 0);
  for (int i = 0; i < 100 && kill(pm, 0) == 0; i++) usleep(50000);
  assert_int_not_equal(kill(pm, 0), 0);
  /* Health checks run every 2 s in this test (the spec's 5 minutes, configured): one
   * marks it degraded, starts it again and finds it healthy. */
  WAIT_FOR("SELECT count(*) = 1 FROM instance_events WHERE event_type = 'server.degraded'", 30);
  char *recovered = sb_xasprintf("SELECT status = 'active' FROM shared_rds_instances WHERE id = '%s'", sid);
  WAIT_FOR(recovered, 30);
  WAIT_FOR("SELECT count(*) = 1 FROM instance_events WHERE event_type = 'server.recovered'", 10);
  free(text);
  text = sb_read_file(pidfile, NULL, &err);
  assert_non_null(text);
  assert_true((pid_t)atol(text) != pm);
  assert_databases_match(); /* it answers, with its tenant */

  /* A degraded server gets no new databases: a request now waits for another server. */
  stop_engine(&engines[0], SIGTERM);
  const char *sp[] = {sid};
  PQclear(sbtest_query(db, "UPDATE shared_rds_instances SET status = 'degraded' WHERE id = $1", 1, sp));
  char *id2 = provision(user, "starter", "health-two");
  const char *p2[] = {id2};
  char *placed = sbtest_scalar(db, "SELECT coalesce(shared_rds_id::text, 'none') FROM instances "
                                   "WHERE id = $1", 1, p2);
  assert_string_not_equal(placed, sid);
  free(recovered), free(text), free(pidfile), free(base), free(placed), free(id2);
  free(sid), free(name), free(id), free(user);
}

/* ---- policy hot reload in a running engine -------------------------------------------- */

static void test_broken_policy_refused_while_running(void **state) {
  char *user = new_user(1);
  engines[0] = start_engine();
  char *pol = sb_xasprintf("%s/policies/backups.lua", work);
  sb_error_t err;
  char *good = sb_read_file(pol, NULL, &err);
  assert_non_null(good);
  /* The engine has loaded and recorded its versions. */
  WAIT_FOR("SELECT count(*) >= 6 FROM policy_versions WHERE status = 'loaded'", 30);
  const char *broken = "local M = {}\nfunction M.schedule(input)\n  return {\nend\nreturn M\n";
  assert_int_equal(sb_write_file_atomic(pol, broken, strlen(broken), 0644, &err), 0);
  WAIT_FOR("SELECT count(*) = 1 FROM instance_events WHERE event_type = 'policy.reload_failed' "
           "AND payload->>'error' LIKE '%backups.lua:4:%'", 30);
  /* Still working: a request gets provisioned by the running engine. */
  char *id = provision(user, "starter", "reload");
  WAIT_FOR("SELECT count(*) = 1 FROM instances WHERE status = 'active'", 60);
  /* And back: the good version is current again (its sha is recorded as loaded). */
  char *edited = sb_xasprintf("%s-- fixed\n", good);
  assert_int_equal(sb_write_file_atomic(pol, edited, strlen(edited), 0644, &err), 0);
  char sha[65];
  sb_sha256_hex(edited, strlen(edited), sha);
  char *q = sb_xasprintf("SELECT count(*) = 1 FROM policy_versions WHERE name = 'backups' "
                         "AND sha256 = '%s' AND status = 'loaded'", sha);
  WAIT_FOR(q, 30);
  assert_int_equal(sb_write_file_atomic(pol, good, strlen(good), 0644, &err), 0);
  free(q), free(edited), free(good), free(pol), free(id), free(user);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_capacity_under_concurrency, before, after),
      cmocka_unit_test_setup_teardown(test_kill_9_anywhere, before, after),
      cmocka_unit_test_setup_teardown(test_suspend_resume_deprovision, before, after),
      cmocka_unit_test_setup_teardown(test_failed_instance_deleted_gives_place_back_once, before, after),
      cmocka_unit_test_setup_teardown(test_delete_while_provisioning, before, after),
      cmocka_unit_test_setup_teardown(test_dead_provision_job_fails_instance, before, after),
      cmocka_unit_test_setup_teardown(test_failing_server_is_degraded_and_recovers, before, after),
      cmocka_unit_test_setup_teardown(test_broken_policy_refused_while_running, before, after),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

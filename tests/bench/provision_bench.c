/*
 * provision_bench.c: benchmarks of provisioning (issue: provisioning engine).
 *
 * tx mode (default): the provisioning transaction through the engine
 *   (sb_provision_request: provisioning and placement decisions in Lua, the
 *   conditional capacity update, the instance row, the spec's `created` event, both
 *   decision records and the job) with 16 concurrent requests, against
 *   `pgbench -c 16` running the spec's four statements (find a server, insert the
 *   instance, take capacity, log the event) in one transaction on the same database.
 *   The engine side is measured twice:
 *     pooled   as `solobase serve` runs it: the 16 requesters share the engine's pool
 *              of `api_workers` database sessions (default 2; BENCH_POOL sets it), as
 *              POST /v1/instances requests share the API workers; a request's time
 *              includes its wait for a session;
 *     16 conns every request on a connection of its own, 16 in PostgreSQL at once.
 *   All three alternate in one run (3 rounds of 15 s each); medians, the ratios and
 *   the requests' p50/p99 are printed (target: engine >= 0.8x pgbench). Afterwards
 *   the over-allocation check: no server above max_databases, and current_databases
 *   equal to the instances holding a place, for the engine's servers.
 *
 * e2e mode (`provision_bench e2e [N]`): N requests (default 40, 4 at a time) against
 *   an engine running in this process on the local fleet driver (real PostgreSQL
 *   clusters and PgBouncer), timing each from the request to its instance being
 *   active (the tenant database exists): median and p99.
 *
 * The database: a fresh one on the embedded cluster under SOLOBASE_DATA_DIR (default
 * /tmp/solobase-bench), or DATABASE_URL's server. Run from the source tree:
 *   build/provision_bench        build/provision_bench e2e 40
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "mgmtdb.h"
#include "migrate.h"
#include "provision.h"
#include "util.h"

#define ROUNDS 3
static int THREADS = 16, SECONDS = 15;
#define USERS 10000

static char *url;          /* the benchmark database */
static sb_keyring_t *keys;
static sb_policy_registry_t *policies;
static char users[USERS][37];
static _Atomic long request_seq; /* subdomains stay unique across rounds */

static void die(const char *what, const sb_error_t *err) {
  fprintf(stderr, "%s: %s\n", what, err ? err->msg : "");
  exit(1);
}

static sb_db_t *connect_db(void) {
  sb_error_t err;
  sb_db_t *db = sb_db_connect(url, NULL, "provision_bench", &err);
  if (!db) die("connect", &err);
  return db;
}

static void exec(sb_db_t *db, const char *sql) {
  sb_error_t err;
  if (sb_db_exec_script(db, sql, &err) != 0) die(sql, &err);
}

/* A fresh, migrated and seeded database with users and roomy fake shared servers. */
static void setup(bool fake_servers) {
  sb_error_t err;
  char *admin = sb_mgmtdb_url(&err);
  if (!admin) die("management database", &err);
  char name[64];
  snprintf(name, sizeof name, "provision_bench_%d", (int)getpid());
  char *slash = strrchr(admin, '/');
  *slash = '\0';
  url = sb_xasprintf("%s/%s", admin, name);
  if (sb_mgmtdb_create_database(url, NULL, &err) != 0) die("create database", &err);
  sb_db_t *db = connect_db();
  int n;
  if (sb_migrate_apply(db, sb_config()->schema_dir, &n, &err) != 0 ||
      sb_seed_apply(db, sb_config()->schema_dir, sb_config()->seeds_dir, &n, &err) != 0)
    die("migrate", &err);
  exec(db, "UPDATE plans SET max_instances = 1000000 WHERE code = 'starter'");
  /* User ids pgbench can compute from a number (md5(n)::uuid), so its transaction
   * needs no lookup. */
  exec(db, "INSERT INTO users (id, email) SELECT md5(g::text)::uuid, 'bench' || g || '@example.com' "
           "FROM generate_series(1, 10000) g");
  if (fake_servers)
    exec(db, "INSERT INTO shared_rds_instances (rds_instance_id, status, max_databases, "
             "storage_total_gb, host, port) SELECT 'bench-' || g, 'active', 1000000, 1000000, "
             "'127.0.0.1', 5432 FROM generate_series(1, 10) g");
  exec(db, "CREATE SEQUENCE bench_seq");
  if (getenv("BENCH_SQL")) exec(db, getenv("BENCH_SQL")); /* experiments */
  sb_db_t *d2 = db;
  PGresult *res = sb_db_query(d2, "SELECT id FROM users ORDER BY email", 0, NULL, &err);
  for (int i = 0; i < PQntuples(res) && i < USERS; i++)
    snprintf(users[i], 37, "%s", PQgetvalue(res, i, 0));
  PQclear(res);
  sb_db_free(db);
  free(admin);
  free(sb_config()->database_url);
  sb_config()->database_url = sb_xstrdup(url);
}

static void teardown(void) {
  sb_error_t err;
  char *admin = sb_xstrdup(url);
  char *slash = strrchr(admin, '/');
  *slash = '\0';
  sb_db_t *db = sb_db_connect(url, "postgres", "provision_bench", &err);
  char *sql = sb_xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", slash + 1);
  if (db) sb_db_exec_params(db, sql, 0, NULL, &err);
  free(sql);
  sb_db_free(db);
  free(admin);
}

/* ---- engine side ---- */

/* The pooled engine: requesters queue their requests (first come, first served) for a
 * few session threads, each with its connection and policy engine, as the HTTP server
 * queues POST /v1/instances for its API workers (core/server.c). */
typedef struct ticket {
  sb_provision_request_t req;
  int rc;
  bool ok, done;
  sb_error_t err;
  pthread_cond_t cv;
  struct ticket *next;
} ticket_t;

typedef struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  ticket_t *head, *tail;
  bool stop;
} pool_t;

typedef struct worker {
  int n;
  _Atomic bool *stop;
  pool_t *pool;     /* requests go to the pool's sessions; NULL: run them here */
  long done, failed;
  double *ms;       /* each request's time, request to answer (at most MAX_SAMPLES) */
  long nms;
} worker_t;

#define MAX_SAMPLES 200000

typedef struct session {
  sb_db_t *db;
  sb_policy_engine_t *pe;
} session_t;

static session_t session_open(void) {
  sb_error_t err;
  session_t s = {connect_db(), sb_policy_engine_new(policies, &err)};
  if (!s.pe) die("policy engine", &err);
  if (getenv("BENCH_CONN_SQL")) exec(s.db, getenv("BENCH_CONN_SQL"));
  return s;
}

static void session_close(session_t *s) {
  sb_policy_engine_free(s->pe);
  sb_db_free(s->db);
}

static bool provision(session_t *se, const sb_provision_request_t *req, sb_error_t *err) {
  sb_fleet_ctx_t ctx = {se->db, se->pe, NULL, keys, "bench"};
  sb_provision_result_t out;
  return sb_provision_request(&ctx, req, &out, err) == 0 && strcmp(out.status, "provisioning") == 0;
}

static void *pool_session(void *arg) {
  pool_t *p = arg;
  session_t se = session_open();
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    ticket_t *t = p->head;
    if (!t) break;
    p->head = t->next;
    if (!p->head) p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    t->ok = provision(&se, &t->req, &t->err);
    pthread_mutex_lock(&p->mu);
    t->done = true;
    pthread_cond_signal(&t->cv);
  }
  pthread_mutex_unlock(&p->mu);
  session_close(&se);
  return NULL;
}

/* Sends req to the pool and waits for the answer. */
static bool pool_provision(pool_t *p, const sb_provision_request_t *req, sb_error_t *err) {
  ticket_t t = {.req = *req};
  pthread_cond_init(&t.cv, NULL);
  pthread_mutex_lock(&p->mu);
  if (p->tail) p->tail->next = &t;
  else p->head = &t;
  p->tail = &t;
  pthread_cond_signal(&p->cv);
  while (!t.done) pthread_cond_wait(&t.cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
  pthread_cond_destroy(&t.cv);
  *err = t.err;
  return t.ok;
}

static void *engine_worker(void *arg) {
  worker_t *w = arg;
  sb_error_t err;
  session_t se = {0};
  if (!w->pool) se = session_open();
  unsigned seed = (unsigned)w->n * 7919u + (unsigned)time(NULL);
  while (!atomic_load(w->stop)) {
    char sub[64];
    snprintf(sub, sizeof sub, "en-%ld", atomic_fetch_add(&request_seq, 1));
    sb_provision_request_t req = {users[rand_r(&seed) % USERS], "starter", "bench", sub, NULL};
    uint64_t t0 = sb_now_ns();
    bool ok = w->pool ? pool_provision(w->pool, &req, &err) : provision(&se, &req, &err);
    if (w->nms < MAX_SAMPLES) w->ms[w->nms++] = (double)(sb_now_ns() - t0) / 1e6;
    if (ok) w->done++;
    else if (w->failed++ < 3) fprintf(stderr, "engine request failed: %s\n", err.msg);
  }
  if (!w->pool) session_close(&se);
  return NULL;
}

#include <sys/resource.h>
static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int cmp(const void *a, const void *b);

/* THREADS concurrent requesters for SECONDS; pool > 0: they share that many sessions
 * (the others wait, as requests wait for an API worker). Transactions/s; p50/p99 of
 * the requests' times into lat[0..1]. */
static double run_engine(int pool, double lat[2]) {
  double self0 = self_cpu_s();
  _Atomic bool stop = false;
  pool_t p = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, false};
  pthread_t sessions[64];
  for (int i = 0; i < pool && i < 64; i++) pthread_create(&sessions[i], NULL, pool_session, &p);
  worker_t w[64];
  pthread_t th[64];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){i, &stop, pool > 0 ? &p : NULL, 0, 0, sb_xcalloc(MAX_SAMPLES, sizeof(double)), 0};
    pthread_create(&th[i], NULL, engine_worker, &w[i]);
  }
  uint64_t t0 = sb_now_ns();
  sleep(SECONDS);
  atomic_store(&stop, true);
  long done = 0, failed = 0, n = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(th[i], NULL);
    done += w[i].done;
    failed += w[i].failed;
    n += w[i].nms;
  }
  double secs = (double)(sb_now_ns() - t0) / 1e9;
  double *all = sb_xcalloc((size_t)(n ? n : 1), sizeof(double));
  for (int i = 0, k = 0; i < THREADS; i++) {
    memcpy(all + k, w[i].ms, (size_t)w[i].nms * sizeof(double));
    k += (int)w[i].nms;
    free(w[i].ms);
  }
  qsort(all, (size_t)n, sizeof(double), cmp);
  lat[0] = n ? all[n / 2] : 0;
  lat[1] = n ? all[(long)((double)(n - 1) * 0.99)] : 0;
  free(all);
  pthread_mutex_lock(&p.mu);
  p.stop = true;
  pthread_cond_broadcast(&p.cv);
  pthread_mutex_unlock(&p.mu);
  for (int i = 0; i < pool && i < 64; i++) pthread_join(sessions[i], NULL);
  if (failed) fprintf(stderr, "engine: %ld requests failed\n", failed);
  printf("  (engine client: %.0f us CPU per request in this process)\n",
         (self_cpu_s() - self0) * 1e6 / (double)(done ? done : 1));
  if (getenv("BENCH_VERBOSE")) {
    sb_error_t e;
    sb_db_t *db = connect_db();
    PGresult *r = sb_db_query(db, "SELECT string_agg(current_databases::text, ' ' ORDER BY rds_instance_id) FROM shared_rds_instances", 0, NULL, &e);
    if (r) printf("  server counts: %s\n", PQgetvalue(r, 0, 0)), PQclear(r);
    sb_db_free(db);
  }
  return (double)done / secs;
}

/* ---- pgbench side ---- */

static double run_pgbench(const char *bindir) {
  char script[] = "/tmp/provision-bench-XXXXXX.sql";
  int fd = mkstemps(script, 4);
  FILE *f = fdopen(fd, "w");
  /* The spec's four statements, with its $parameters as pgbench variables. */
  fprintf(f,
          "\\set u random(1, %d)\n"
          "BEGIN;\n"
          "SELECT * FROM shared_rds_instances\n"
          "WHERE status = 'active'\n"
          "  AND current_databases < max_databases\n"
          "ORDER BY current_databases ASC\n"
          "LIMIT 1 \\gset srv_\n"
          "INSERT INTO instances (\n"
          "  user_id, name, subdomain, status,\n"
          "  database_tier, compute_tier,\n"
          "  shared_rds_id, database_name, database_user\n"
          ") VALUES (\n"
          "  md5(:u::text)::uuid, 'bench', 'pg-' || nextval('bench_seq'), 'provisioning',\n"
          "  'shared', 'lambda',\n"
          "  :srv_id, 'instance_pg' || currval('bench_seq'), 'user_pg' || currval('bench_seq')\n"
          ") RETURNING id AS instance_id \\gset\n"
          "UPDATE shared_rds_instances\n"
          "SET current_databases = current_databases + 1\n"
          "WHERE id = :srv_id;\n"
          "INSERT INTO instance_events (\n"
          "  instance_id, user_id, event_type, description\n"
          ") VALUES (\n"
          "  :instance_id, md5(:u::text)::uuid, 'created', 'Instance provisioning started'\n"
          ");\n"
          "COMMIT;\n",
          USERS);
  fclose(f);
  char *cmd = sb_xasprintf("%s/pgbench -n -M prepared -c %d -j 2 -T %d -f %s '%s' 2>&1", bindir, THREADS,
                           SECONDS, script, url);
  FILE *p = popen(cmd, "r");
  free(cmd);
  double tps = 0;
  char line[512];
  while (fgets(line, sizeof line, p)) {
    if (strstr(line, "tps = ") && tps == 0) tps = atof(strstr(line, "tps = ") + 6);
    if (strstr(line, "ERROR") || strstr(line, "aborted")) fputs(line, stderr);
  }
  pclose(p);
  unlink(script);
  return tps;
}

/* Busy CPU time of the whole machine so far, in seconds (from /proc/stat): the
 * benchmark reports CPU spent per transaction, database and client together. */
static double cpu_busy_s(void) {
  FILE *f = fopen("/proc/stat", "r");
  unsigned long long v[8] = {0};
  if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                  &v[4], &v[5], &v[6], &v[7]) == 8) {
    fclose(f);
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
  }
  if (f) fclose(f);
  return 0;
}

/* WAL position in bytes: the benchmark reports WAL written per transaction. */
static double wal_bytes(void) {
  sb_error_t err;
  sb_db_t *db = connect_db();
  PGresult *res = sb_db_query(db, "SELECT pg_current_wal_lsn() - '0/0'", 0, NULL, &err);
  double v = res ? atof(PQgetvalue(res, 0, 0)) : 0;
  if (res) PQclear(res);
  sb_db_free(db);
  return v;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void check_allocation(void) {
  sb_error_t err;
  sb_db_t *db = connect_db();
  PGresult *res = sb_db_query(
      db,
      "SELECT count(*) FILTER (WHERE current_databases > max_databases), "
      "count(*) FILTER (WHERE current_databases <> (SELECT count(*) FROM instances i "
      "  WHERE i.shared_rds_id = s.id AND i.status IN ('provisioning', 'active', 'suspended', "
      "  'deleting'))) FROM shared_rds_instances s",
      0, NULL, &err);
  if (!res) die("check", &err);
  printf("over-allocated servers: %s; servers whose counter differs from their instances: %s\n",
         PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
  PQclear(res);
  sb_db_free(db);
}

static void bench_tx(void) {
  sb_error_t err;
  char *bindir = sb_pg_bindir(&err);
  if (!bindir) die("pg bindir", &err);
  int pool = getenv("BENCH_POOL") ? atoi(getenv("BENCH_POOL")) : (int)sb_config()->api_workers;
  bool engine_only = getenv("BENCH_ENGINE_ONLY") != NULL;
  double pooled[ROUNDS], conns[ROUNDS], pgb[ROUNDS], lat_p[ROUNDS][2], lat_c[ROUNDS][2];
  for (int r = 0; r < ROUNDS; r++) {
    double w0 = wal_bytes(), c0 = cpu_busy_s();
    pgb[r] = engine_only ? 1 : run_pgbench(bindir);
    double w1 = wal_bytes(), c1 = cpu_busy_s();
    pooled[r] = run_engine(pool, lat_p[r]);
    double w2 = wal_bytes(), c2 = cpu_busy_s();
    conns[r] = run_engine(0, lat_c[r]);
    double w3 = wal_bytes(), c3 = cpu_busy_s();
    printf("round %d: pgbench %.0f tx/s (%.0f WAL bytes, %.0f us CPU per tx); "
           "engine pooled (%d sessions) %.0f tx/s (%.0f WAL bytes, %.0f us CPU per tx, "
           "requests p50 %.1f p99 %.1f ms); engine %d conns %.0f tx/s (%.0f WAL bytes, "
           "%.0f us CPU per tx, p50 %.1f p99 %.1f ms)\n",
           r + 1, pgb[r], (w1 - w0) / (pgb[r] * SECONDS), (c1 - c0) * 1e6 / (pgb[r] * SECONDS),
           pool, pooled[r], (w2 - w1) / (pooled[r] * SECONDS),
           (c2 - c1) * 1e6 / (pooled[r] * SECONDS), lat_p[r][0], lat_p[r][1], THREADS, conns[r],
           (w3 - w2) / (conns[r] * SECONDS), (c3 - c2) * 1e6 / (conns[r] * SECONDS), lat_c[r][0],
           lat_c[r][1]);
    fflush(stdout);
  }
  qsort(pooled, ROUNDS, sizeof(double), cmp);
  qsort(conns, ROUNDS, sizeof(double), cmp);
  qsort(pgb, ROUNDS, sizeof(double), cmp);
  double m = pgb[ROUNDS / 2];
  printf("provisioning transaction, %d concurrent requests, %d s rounds, medians:\n", THREADS, SECONDS);
  printf("  pgbench -c %d, the spec's four statements: %.0f tx/s\n", THREADS, m);
  printf("  engine (decisions, capacity, instance, event, decision log, job):\n");
  printf("    pooled, %d sessions (as solobase serve): %.0f tx/s", pool, pooled[ROUNDS / 2]);
  if (engine_only) printf("\n");
  else printf(", %.2fx pgbench (target >= 0.80x)\n", pooled[ROUNDS / 2] / m);
  printf("    %d connections, one per request:       %.0f tx/s", THREADS, conns[ROUNDS / 2]);
  if (engine_only) printf("\n");
  else printf(", %.2fx pgbench\n", conns[ROUNDS / 2] / m);
  check_allocation();
  free(bindir);
}

/* ---- end to end on the local fleet ---- */

typedef struct e2e {
  int from, to;
  double *latency_ms;
} e2e_t;

static void *e2e_worker(void *arg) {
  e2e_t *job = arg;
  sb_error_t err;
  sb_db_t *db = connect_db();
  sb_policy_engine_t *pe = sb_policy_engine_new(policies, &err);
  sb_fleet_ctx_t ctx = {db, pe, NULL, keys, "bench"};
  for (int i = job->from; i < job->to; i++) {
    char sub[64];
    snprintf(sub, sizeof sub, "e2e-%d-%d", (int)getpid() % 10000, i);
    sb_provision_request_t req = {users[i % USERS], "starter", "bench", sub, NULL};
    sb_provision_result_t out;
    uint64_t t0 = sb_now_ns();
    if (sb_provision_request(&ctx, &req, &out, &err) != 0) die("request", &err);
    const char *p[] = {out.instance_id};
    for (;;) {
      PGresult *res = sb_db_query(db, "SELECT status FROM instances WHERE id = $1", 1, p, &err);
      bool active = res && strcmp(PQgetvalue(res, 0, 0), "active") == 0;
      if (res) PQclear(res);
      if (active) break;
      usleep(2000);
    }
    job->latency_ms[i] = (double)(sb_now_ns() - t0) / 1e6;
  }
  sb_policy_engine_free(pe);
  sb_db_free(db);
  return NULL;
}

static void bench_e2e(int n) {
  sb_error_t err;
  sb_engine_t *engine = sb_engine_start(&err);
  if (!engine) die("engine", &err);
  /* The first request waits for the first server; warm up with one. */
  double *lat = sb_xcalloc((size_t)n + 1, sizeof(double));
  e2e_t warm = {n, n + 1, lat};
  e2e_worker(&warm);
  printf("first instance (includes creating the first shared server): %.0f ms\n", lat[n]);
  pthread_t th[4];
  e2e_t parts[4];
  for (int i = 0; i < 4; i++) {
    parts[i] = (e2e_t){i * n / 4, (i + 1) * n / 4, lat};
    pthread_create(&th[i], NULL, e2e_worker, &parts[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  qsort(lat, (size_t)n, sizeof(double), cmp);
  printf("provisioning a tenant database end to end (%d requests, 4 at a time, local fleet): "
         "median %.1f ms, p99 %.1f ms, max %.1f ms\n",
         n, lat[n / 2], lat[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], lat[n - 1]);
  free(lat);
  sb_engine_request_stop(engine);
  sb_engine_free(engine);
}

/* At exit, however the run ends: every server it started under the data dir (the
 * embedded cluster, the local fleet's clusters and their PgBouncers) is stopped, unless
 * BENCH_KEEP_SERVERS=1. */
static void stop_servers(void) {
  if (getenv("BENCH_KEEP_SERVERS") && strcmp(getenv("BENCH_KEEP_SERVERS"), "1") == 0) return;
  char *cmd = sb_xasprintf("'%s/tests/support/stop-servers' '%s'", SB_SOURCE_DIR,
                           sb_config()->data_dir);
  if (system(cmd) != 0) fprintf(stderr, "stopping the servers under %s failed\n", sb_config()->data_dir);
  free(cmd);
}

int main(int argc, char **argv) {
  if (getenv("BENCH_THREADS")) THREADS = atoi(getenv("BENCH_THREADS"));
  if (getenv("BENCH_SECONDS")) SECONDS = atoi(getenv("BENCH_SECONDS"));
  bool e2e = argc > 1 && strcmp(argv[1], "e2e") == 0;
  if (!getenv("SOLOBASE_DATA_DIR")) setenv("SOLOBASE_DATA_DIR", "/tmp/solobase-bench", 1);
  if (e2e && !getenv("SOLOBASE_FLEET_SERVER_SETTINGS"))
    setenv("SOLOBASE_FLEET_SERVER_SETTINGS", "shared_buffers=16MB", 1);
  sb_error_t err;
  if (sb_config_load(NULL, &err) != 0 || sb_config_finish(&err) != 0) die("settings", &err);
  atexit(stop_servers);
  setup(!e2e);
  if (!(keys = sb_keyring_load(&err))) die("keys", &err);
  sb_policy_limits_t limits = {1000000, (size_t)64 << 20};
  policies = sb_policy_registry_new(sb_config()->policies_dir, &limits);
  sb_policy_report_t rep;
  if (sb_policy_registry_reload(policies, &rep, &err) != 0) die("policies", &err);
  if (e2e) bench_e2e(argc > 2 ? atoi(argv[2]) : 40);
  else bench_tx();
  sb_policy_registry_free(policies);
  sb_keyring_free(keys);
  teardown();
  return 0;
}

/*
 * test_api.c: `solobase serve`'s HTTP API and websocket event stream, end to end: real
 * engine processes on a management database of the test's own, real HTTP (libcurl) and
 * websocket (libwebsockets) clients.
 *
 *   http          every route, as operator and customers: create (202, Location, job),
 *                 get, list with pagination, suspend, resume, delete, servers, plans,
 *                 events, healthz, metrics (every job status); bad input (malformed JSON, unknown fields,
 *                 wrong types, unknown plan, wrong media type, oversized body, taken
 *                 subdomain) answered 4xx with a stable code and nothing changed;
 *                 revoked and expired tokens refused.
 *   input checks  concurrent creates within a plan's limit; bodies of resume and DELETE;
 *                 NULs, invalid UTF-8, lengths in characters, regions, media types,
 *                 cursors, ids in upper case: 4xx naming the field, nothing changed,
 *                 every answer UTF-8 JSON.
 *   isolation     a customer token can neither read nor subscribe to another user's
 *                 instances or events (HTTP and websocket), and row-level security
 *                 refuses the rows even to a query without a WHERE; with row-level
 *                 security switched off, the API's queries alone still isolate.
 *   two engines   an event written by one engine (an API request), by SQL (a script),
 *                 reaches a subscriber of another engine process.
 *   resume        reconnect with last_id: exactly the missed events, in order, then
 *                 `replayed`, then live ones, while events keep being written; from
 *                 memory and from the database (older than the ring); resume_too_old
 *                 after archiving.
 *   malformed     bad websocket messages get errors and the connection stays usable;
 *                 invalid UTF-8 closes only that connection (1007); garbage HTTP gets a
 *                 400; the engine keeps running.
 *   slow client   a client that never reads does not delay the others; once it reads
 *                 again it gets `overflow` with its last id and a close 4008.
 *   tokens        a websocket whose token is revoked is closed with 4001 at once and
 *                 gets nothing committed after; one whose token expires, at expiry.
 *   index scans   live reads and replays of the stream do not scan instance_events
 *                 whole once it has grown past what the plans were made for.
 *   job wake      a job queued with an event is claimed at once (NOTIFY sb_jobs).
 *   shutdown      SIGTERM closes websockets with 1001, still answers the request in
 *                 flight, refuses new ones with a JSON 503, and the engine exits 0.
 */
#include <ctype.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <cmocka.h>

#include "auth.h"
#include "config.h"
#include "engine.h"
#include "fleet.h"
#include "luaconv.h"
#include "sbtest.h"
#include "sbtest_net.h"
#include "util.h"

#define MAX_ENGINES 2

static char work[64];
static char *dbname, *url;
static sb_db_t *db;
static pid_t engines[MAX_ENGINES];
static int ports[MAX_ENGINES];
static int engine_log_seq;
static lua_State *J; /* decodes JSON answers */

/* Users and tokens every test has. */
static char op_id[37], ada_id[37], bob_id[37];
static char op_token[64], ada_token[64], bob_token[64];

/* ---- engines ---------------------------------------------------------------------- */

static void dump_logs(void) {
  char *cmd = sb_xasprintf("tail -n 40 %s/engine-*.log >&2", work);
  if (system(cmd) != 0) fprintf(stderr, "(no engine logs)\n");
  free(cmd);
}

static void start_engine(int i) {
  char log[128];
  snprintf(log, sizeof log, "%s/engine-%d.log", work, engine_log_seq++);
  ports[i] = sbt_free_port();
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    setenv("DATABASE_URL", url, 1);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", ports[i]);
    setenv("SOLOBASE_LISTEN", listen, 1);
    setenv("SOLOBASE_WORKERS", "2", 1);
    setenv("SOLOBASE_API_WORKERS", "2", 1);
    setenv("SOLOBASE_LOG_LEVEL", "info", 1);
    execl(getenv("SOLOBASE_BIN"), "solobase", "serve", (char *)NULL);
    _exit(127);
  }
  engines[i] = pid;
  /* Ready when /healthz answers 200. */
  for (int t = 0; t < 300; t++) {
    long status;
    free(sbt_http(ports[i], "GET", "/healthz", NULL, NULL, NULL, &status));
    if (status == 200) return;
    usleep(50000);
  }
  dump_logs();
  fail_msg("engine %d did not become ready", i);
}

/* Stops an engine with sig; its exit status. */
static int stop_engine(int i, int sig) {
  if (engines[i] <= 0) return 0;
  kill(engines[i], sig);
  int status = 0;
  waitpid(engines[i], &status, 0);
  engines[i] = 0;
  return status;
}

static bool engine_alive(int i) {
  int status;
  return engines[i] > 0 && waitpid(engines[i], &status, WNOHANG) == 0;
}

/* ---- helpers -------------------------------------------------------------------------- */

static char *scalar(const char *sql, int n, const char *const *p) { return sbtest_scalar(db, sql, n, p); }

static long long scalar_ll(const char *sql, int n, const char *const *p) {
  char *v = scalar(sql, n, p);
  long long x = atoll(v);
  free(v);
  return x;
}

static long long max_seq(void) {
  return scalar_ll("SELECT coalesce(max(seq), 0) FROM instance_events", 0, NULL);
}

/* An HTTP request; the body is decoded onto J's stack top (nil when not JSON). */
static long http(int engine, const char *method, const char *path, const char *token,
                 const char *body) {
  long status;
  char *text = sbt_http(ports[engine], method, path, token, NULL, body, &status);
  lua_settop(J, 0);
  sb_error_t err;
  if (sb_lua_json_decode(J, text, strlen(text), &err) != 0) lua_pushnil(J);
  free(text);
  return status;
}

/* A string field at a dotted path of the table on top of J ("" when absent). */
static const char *field(const char *path) {
  static char out[512];
  lua_pushvalue(J, -1);
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save)) {
    if (!lua_istable(J, -1)) break;
    char *end;
    long idx = strtol(k, &end, 10);
    if (*end == '\0') lua_rawgeti(J, -1, idx);
    else lua_getfield(J, -1, k);
    lua_remove(J, -2);
  }
  out[0] = '\0';
  if (lua_type(J, -1) == LUA_TSTRING || lua_type(J, -1) == LUA_TNUMBER)
    snprintf(out, sizeof out, "%s", lua_tostring(J, -1));
  lua_pop(J, 1);
  return out;
}

#define ASSERT_HTTP(expect_status, expect_code, engine, method, path, token, body)            \
  do {                                                                                       \
    long got_ = http(engine, method, path, token, body);                                     \
    if (got_ != (expect_status) || strcmp(field("error.code"), expect_code) != 0)            \
      fail_msg("%s %s: expected %d %s, got %ld %s (%s)", method, path, expect_status,        \
               expect_code, got_, field("error.code"), field("error.message"));              \
  } while (0)

static void make_user(const char *email, const char *role, char *id, char *token) {
  sb_error_t err;
  if (sb_user_create(db, email, NULL, role, NULL, id, &err) != 0) fail_msg("%s", err.msg);
  if (sb_token_create(db, email, role, "test", NULL, token, NULL, &err) != 0) fail_msg("%s", err.msg);
}

/* An instance row without provisioning (for event tests); its id into id. */
static void fake_instance(const char *user, const char *sub, char *id) {
  const char *p[] = {user, sub};
  char *v = scalar("INSERT INTO instances (user_id, name, subdomain, status, status_reason) "
                   "VALUES ($1, $2, $2, 'failed', 'test') RETURNING id",
                   2, p);
  snprintf(id, 37, "%s", v);
  free(v);
}

/* n events of type for (user, instance) (either may be NULL), in one transaction. */
static void insert_events(const char *type, const char *user, const char *instance, int n) {
  char count[16];
  snprintf(count, sizeof count, "%d", n);
  const char *p[] = {type, user, instance, count};
  PQclear(sbtest_query(db,
                       "INSERT INTO instance_events (event_type, user_id, instance_id, description) "
                       "SELECT $1, $2::uuid, $3::uuid, 'test ' || g FROM generate_series(1, $4::int) g",
                       4, p));
}

/* What a websocket client collected: event ids and their user ids, other messages. */
typedef struct got {
  int64_t *ids;
  char (*users)[37];
  int n, cap;
  int messages; /* `events` messages */
  int replayed, errors, too_old, overflow;
  int64_t replayed_last, overflow_last;
  int after_overflow; /* messages received after `overflow` */
  char last_error[128];
} got_t;

static void got_free(got_t *g) {
  free(g->ids);
  free(g->users);
  memset(g, 0, sizeof *g);
}

/* Reads one message into g; false on timeout. */
static bool collect_one(sbt_ws_t *c, got_t *g, int timeout_ms) {
  char *m = sbt_ws_recv(c, timeout_ms);
  if (!m) return false;
  lua_settop(J, 0);
  sb_error_t err;
  if (sb_lua_json_decode(J, m, strlen(m), &err) != 0) fail_msg("not JSON: %.200s", m);
  free(m);
  const char *type = field("type");
  if (g->overflow) g->after_overflow++;
  if (strcmp(type, "events") == 0) {
    g->messages++;
    lua_getfield(J, -1, "events");
    int n = (int)lua_rawlen(J, -1);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(J, -1, i);
      if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 256;
        g->ids = sb_xrealloc(g->ids, (size_t)g->cap * sizeof *g->ids);
        g->users = sb_xrealloc(g->users, (size_t)g->cap * sizeof *g->users);
      }
      g->ids[g->n] = atoll(field("id"));
      snprintf(g->users[g->n], 37, "%s", field("user_id"));
      g->n++;
      lua_pop(J, 1);
    }
    lua_pop(J, 1);
  } else if (strcmp(type, "replayed") == 0) {
    g->replayed++;
    g->replayed_last = atoll(field("last_id"));
  } else if (strcmp(type, "error") == 0) {
    g->errors++;
    snprintf(g->last_error, sizeof g->last_error, "%s", field("code"));
  } else if (strcmp(type, "resume_too_old") == 0) {
    g->too_old++;
  } else if (strcmp(type, "overflow") == 0) {
    g->overflow++;
    g->overflow_last = atoll(field("last_id"));
  }
  return true;
}

/* Reads until g holds `want` events (or timeout_ms without a message). */
static void collect(sbt_ws_t *c, got_t *g, int want, int timeout_ms) {
  while (g->n < want && collect_one(c, g, timeout_ms)) {
  }
}

/* The seqs of every test event (type test.*) after `after` (up to `upto`, 0: no bound)
 * visible to user (NULL: all), from the database, for comparing with what a client
 * subscribed to test.* got. (The engine writes events of its own meanwhile: its
 * capacity check opens a shared server when it starts.) */
static int64_t *expected_ids(int64_t after, int64_t upto, const char *user, int *n) {
  char a[32], u[32];
  snprintf(a, sizeof a, "%lld", (long long)after);
  snprintf(u, sizeof u, "%lld", (long long)(upto ? upto : INT64_MAX));
  const char *p[] = {a, u, user};
  PGresult *res = sbtest_query(db,
                               "SELECT seq FROM instance_events WHERE seq > $1::bigint AND "
                               "seq <= $2::bigint AND ($3::uuid IS NULL OR user_id = $3::uuid) "
                               "AND event_type LIKE 'test.%' "
                               "ORDER BY seq",
                               3, p);
  *n = PQntuples(res);
  int64_t *ids = sb_xcalloc((size_t)*n + 1, sizeof *ids);
  for (int i = 0; i < *n; i++) ids[i] = atoll(PQgetvalue(res, i, 0));
  PQclear(res);
  return ids;
}

static void assert_exactly(const got_t *g, int64_t after, int64_t upto, const char *user) {
  int n;
  int64_t *want = expected_ids(after, upto, user, &n);
  int i = 0;
  for (; i < n && i < g->n; i++)
    if (g->ids[i] != want[i])
      fail_msg("event %d: got id %lld, expected %lld (after %lld)", i, (long long)g->ids[i],
               (long long)want[i], (long long)after);
  if (g->n != n) fail_msg("got %d events, expected %d (after %lld)", g->n, n, (long long)after);
  free(want);
}

static sbt_ws_t *ws_connect(int engine, const char *token) {
  sbt_ws_t *c = sbt_ws_connect(ports[engine], "/v1/events", token, NULL);
  if (!c) fail_msg("cannot connect a websocket to engine %d", engine);
  if (token) {
    char *m = sbt_ws_recv_type(c, "authenticated", 5000);
    if (!m) fail_msg("no authenticated message");
    free(m);
  }
  return c;
}

/* Subscribes and waits for `subscribed` (or the error, returned as its code). */
static const char *subscribe(sbt_ws_t *c, const char *json) {
  static char code[64];
  sbt_ws_send(c, json, -1);
  for (;;) {
    char *m = sbt_ws_recv(c, 5000);
    if (!m) fail_msg("no answer to %s", json);
    bool ok = strstr(m, "\"type\":\"subscribed\"") != NULL;
    bool error = strstr(m, "\"type\":\"error\"") != NULL;
    if (error) {
      lua_settop(J, 0);
      sb_error_t err;
      sb_lua_json_decode(J, m, strlen(m), &err);
      snprintf(code, sizeof code, "%s", field("code"));
    }
    free(m);
    if (ok) return "";
    if (error) return code;
  }
}

/* ---- setup ------------------------------------------------------------------------- */

static int setup(void **state) {
  (void)state;
  sbtest_init();
  snprintf(work, sizeof work, "/tmp/sbtest-api-XXXXXX");
  assert_non_null(mkdtemp(work));
  chmod(work, 0755);
  J = luaL_newstate();
  sb_lua_json_open(J);
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  lua_close(J);
  char *cmd = sb_xasprintf("rm -rf %s", work);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", work);
  free(cmd);
  return 0;
}

static int before(void **state) {
  (void)state;
  db = sbtest_db_create("test_api", true, &dbname);
  url = sbtest_url(dbname);
  free(sb_config()->database_url);
  sb_config()->database_url = sb_xstrdup(url);
  PQclear(sbtest_query(db, "UPDATE plans SET max_instances = 100", 0, NULL));
  make_user("op@example.com", "operator", op_id, op_token);
  make_user("ada@example.com", "customer", ada_id, ada_token);
  make_user("bob@example.com", "customer", bob_id, bob_token);
  start_engine(0);
  return 0;
}

/* Stops the engines and destroys every server they made, whatever happened. */
static int after(void **state) {
  (void)state;
  for (int i = 0; i < MAX_ENGINES; i++) stop_engine(i, SIGTERM);
  sb_error_t err;
  sb_fleet_driver_t *driver = sb_fleet_driver_open(&err);
  PGresult *res = sbtest_query(db, "SELECT rds_instance_id FROM shared_rds_instances", 0, NULL);
  for (int i = 0; driver && i < PQntuples(res); i++) {
    sb_server_t srv = {0};
    snprintf(srv.name, sizeof srv.name, "%s", PQgetvalue(res, i, 0));
    srv.pooler = true;
    if (driver->server_destroy(driver, &srv, &err) != 0)
      fprintf(stderr, "destroying %s: %s\n", srv.name, err.msg);
  }
  PQclear(res);
  if (driver) driver->free(driver);
  sb_db_free(db);
  sbtest_db_drop(dbname);
  free(dbname);
  free(url);
  return 0;
}

/* ---- HTTP ---------------------------------------------------------------------------- */

static long long count_instances(void) { return scalar_ll("SELECT count(*) FROM instances", 0, NULL); }

static void wait_status(const char *id, const char *status, int seconds) {
  char path[128];
  snprintf(path, sizeof path, "/v1/instances/%s", id);
  for (int i = 0; i < seconds * 10; i++) {
    if (http(0, "GET", path, op_token, NULL) == 200 && strcmp(field("instance.status"), status) == 0)
      return;
    usleep(100000);
  }
  dump_logs();
  fail_msg("instance %s never became %s (is %s)", id, status, field("instance.status"));
}

static void test_http_api(void **state) {
  (void)state;
  /* healthz and metrics need no token. */
  assert_int_equal(http(0, "GET", "/healthz", NULL, NULL), 200);
  assert_string_equal(field("status"), "ok");
  assert_string_equal(field("checks.database"), "ok");
  long status;
  char *metrics = sbt_http(ports[0], "GET", "/metrics", NULL, NULL, NULL, &status);
  assert_int_equal(status, 200);
  const char *names[] = {"solobase_http_requests_total{", "solobase_http_request_duration_seconds_bucket{",
                         "solobase_jobs{status=\"queued\"}", "solobase_jobs{status=\"running\"}",
                         "solobase_jobs{status=\"succeeded\"}", "solobase_jobs{status=\"dead\"}",
                         "solobase_jobs{status=\"canceled\"}", "solobase_websocket_clients ",
                         "solobase_policy_decisions_total ", "solobase_policy_errors_total ",
                         "solobase_policy_reloads_total ", "solobase_engine_leader "};
  for (size_t i = 0; i < SB_ARRAY_LEN(names); i++)
    if (!strstr(metrics, names[i])) fail_msg("/metrics lacks %s", names[i]);
  free(metrics);

  /* Tokens. */
  ASSERT_HTTP(401, "unauthorized", 0, "GET", "/v1/plans", NULL, NULL);
  ASSERT_HTTP(401, "unauthorized", 0, "GET", "/v1/plans", "sbt_0000000000000000000000000000000000000000", NULL);
  assert_int_equal(http(0, "GET", "/v1/plans", ada_token, NULL), 200);
  lua_getfield(J, -1, "plans");
  assert_int_equal(lua_rawlen(J, -1), 5);
  lua_pop(J, 1);
  ASSERT_HTTP(404, "not_found", 0, "GET", "/v1/nothing", ada_token, NULL);
  ASSERT_HTTP(405, "method_not_allowed", 0, "PUT", "/v1/instances", ada_token, NULL);

  /* Create: 202 with the instance, its job and a Location. */
  long long before_count = count_instances();
  assert_int_equal(http(0, "POST", "/v1/instances", ada_token,
                        "{\"plan\": \"starter\", \"name\": \"Ada's app\", \"subdomain\": \"ada-app\"}"),
                   202);
  char ada_instance[37];
  snprintf(ada_instance, sizeof ada_instance, "%s", field("instance.id"));
  assert_string_equal(field("instance.user_id"), ada_id);
  assert_string_equal(field("instance.plan"), "starter");
  assert_string_equal(field("job.kind"), "instance.provision");
  const char *st = field("instance.status");
  if (strcmp(st, "requested") != 0 && strcmp(st, "provisioning") != 0 && strcmp(st, "active") != 0)
    fail_msg("a new instance is %s", st);
  assert_int_equal(count_instances(), before_count + 1);

  /* Bad input: a 4xx with a stable code, and nothing changes. */
  before_count = count_instances();
  ASSERT_HTTP(409, "conflict", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"ada-app\"}");
  ASSERT_HTTP(400, "bad_request", 0, "POST", "/v1/instances", ada_token, "{\"plan\": \"starter\",");
  ASSERT_HTTP(400, "bad_request", 0, "POST", "/v1/instances", ada_token, "[1, 2]");
  ASSERT_HTTP(400, "unknown_field", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"x1\", \"tier\": \"dedicated\"}");
  ASSERT_HTTP(400, "invalid_field", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": 7, \"name\": \"x\", \"subdomain\": \"x1\"}");
  ASSERT_HTTP(400, "invalid_field", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": \"starter\", \"subdomain\": \"x1\"}");
  ASSERT_HTTP(400, "invalid_field", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": \"platinum\", \"name\": \"x\", \"subdomain\": \"x1\"}");
  ASSERT_HTTP(400, "invalid_field", 0, "POST", "/v1/instances", ada_token,
              "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"Not A Subdomain\"}");
  free(sbt_http(ports[0], "POST", "/v1/instances", ada_token, "text/plain",
                "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"x1\"}", &status));
  assert_int_equal(status, 415);
  char *big = sb_xmalloc(100 * 1024);
  memset(big, ' ', 100 * 1024 - 1);
  big[0] = '{';
  big[100 * 1024 - 2] = '}';
  big[100 * 1024 - 1] = '\0';
  ASSERT_HTTP(413, "payload_too_large", 0, "POST", "/v1/instances", ada_token, big);
  free(big);
  char body[256];
  snprintf(body, sizeof body,
           "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"x1\", \"user_id\": \"%s\"}", ada_id);
  ASSERT_HTTP(403, "forbidden", 0, "POST", "/v1/instances", bob_token, body);
  assert_int_equal(count_instances(), before_count);
  /* The plan's limit, decided by the provisioning policy. */
  PQclear(sbtest_query(db, "UPDATE plans SET max_instances = 1 WHERE code = 'hobby'", 0, NULL));
  assert_int_equal(http(0, "POST", "/v1/instances", bob_token,
                        "{\"plan\": \"hobby\", \"name\": \"b1\", \"subdomain\": \"bob-1\"}"),
                   202);
  char bob_instance[37];
  snprintf(bob_instance, sizeof bob_instance, "%s", field("instance.id"));
  ASSERT_HTTP(403, "refused", 0, "POST", "/v1/instances", bob_token,
              "{\"plan\": \"hobby\", \"name\": \"b2\", \"subdomain\": \"bob-2\"}");
  assert_int_equal(count_instances(), before_count + 1);

  wait_status(ada_instance, "active", 60);
  wait_status(bob_instance, "active", 60);

  /* Get and list. */
  char path[160];
  snprintf(path, sizeof path, "/v1/instances/%s", ada_instance);
  assert_int_equal(http(0, "GET", path, ada_token, NULL), 200);
  assert_string_equal(field("instance.subdomain"), "ada-app");
  assert_string_equal(field("instance.database_password_enc"), "");
  ASSERT_HTTP(404, "not_found", 0, "GET", "/v1/instances/not-a-uuid", ada_token, NULL);
  for (int i = 0; i < 4; i++) {
    snprintf(body, sizeof body, "{\"plan\": \"starter\", \"name\": \"p%d\", \"subdomain\": \"ada-p%d\"}", i, i);
    assert_int_equal(http(0, "POST", "/v1/instances", ada_token, body), 202);
  }
  /* Pages of 2, newest first, every instance of Ada's once. */
  char cursor[256] = "";
  int seen = 0;
  for (int page = 0; page < 10; page++) {
    snprintf(path, sizeof path, "/v1/instances?limit=2%s%s", cursor[0] ? "&cursor=" : "", cursor);
    assert_int_equal(http(0, "GET", path, ada_token, NULL), 200);
    lua_getfield(J, -1, "instances");
    int n = (int)lua_rawlen(J, -1);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(J, -1, i);
      assert_string_equal(field("user_id"), ada_id);
      lua_pop(J, 1);
    }
    lua_pop(J, 1);
    seen += n;
    snprintf(cursor, sizeof cursor, "%s", field("next_cursor"));
    if (!cursor[0]) break;
  }
  assert_int_equal(seen, 5);
  ASSERT_HTTP(400, "bad_request", 0, "GET", "/v1/instances?limit=0", ada_token, NULL);
  ASSERT_HTTP(400, "bad_request", 0, "GET", "/v1/instances?limit=1000", ada_token, NULL);
  assert_int_equal(http(0, "GET", "/v1/instances?status=active&limit=200", op_token, NULL), 200);

  /* Events of an instance. */
  snprintf(path, sizeof path, "/v1/instances/%s/events", ada_instance);
  assert_int_equal(http(0, "GET", path, ada_token, NULL), 200);
  assert_string_equal(field("events.1.type"), "created");

  /* Servers: operators only. */
  ASSERT_HTTP(403, "forbidden", 0, "GET", "/v1/servers", ada_token, NULL);
  assert_int_equal(http(0, "GET", "/v1/servers", op_token, NULL), 200);
  assert_string_equal(field("servers.1.tier"), "shared");

  /* Suspend and resume: operators only. */
  snprintf(path, sizeof path, "/v1/instances/%s/suspend", ada_instance);
  ASSERT_HTTP(403, "forbidden", 0, "POST", path, ada_token, NULL);
  /* A reason is a word of [a-z_]; anything else is refused, and nothing is queued. */
  long long jobs_before = scalar_ll("SELECT count(*) FROM jobs", 0, NULL);
  ASSERT_HTTP(400, "invalid_field", 0, "POST", path, op_token, "{\"reason\": \"Payment overdue!\"}");
  assert_string_equal(field("error.field"), "reason");
  ASSERT_HTTP(400, "invalid_field", 0, "POST", path, op_token, "{\"reason\": \"\"}");
  assert_int_equal(scalar_ll("SELECT count(*) FROM jobs", 0, NULL), jobs_before);
  assert_int_equal(http(0, "POST", path, op_token, "{\"reason\": \"payment_overdue\"}"), 202);
  wait_status(ada_instance, "suspended", 30);
  ASSERT_HTTP(409, "conflict", 0, "POST", path, op_token, NULL);
  snprintf(path, sizeof path, "/v1/instances/%s/resume", ada_instance);
  assert_int_equal(http(0, "POST", path, op_token, NULL), 202);
  wait_status(ada_instance, "active", 30);

  /* Delete. */
  snprintf(path, sizeof path, "/v1/instances/%s", ada_instance);
  assert_int_equal(http(0, "DELETE", path, ada_token, NULL), 202);
  assert_string_equal(field("job.kind"), "instance.deprovision");
  wait_status(ada_instance, "deleted", 60);

  /* A revoked token stops working at once, though it was cached. */
  char tok[64], tok_id[37];
  sb_error_t err;
  assert_int_equal(sb_token_create(db, "ada@example.com", "customer", "short", NULL, tok, tok_id, &err), 0);
  assert_int_equal(http(0, "GET", "/v1/plans", tok, NULL), 200);
  assert_int_equal(sb_token_revoke(db, tok_id, &err), 0);
  bool refused = false;
  for (int i = 0; i < 20 && !refused; i++) {
    refused = http(0, "GET", "/v1/plans", tok, NULL) == 401;
    if (!refused) usleep(50000);
  }
  assert_true(refused);
  /* An expired token is refused. */
  assert_int_equal(sb_token_create(db, "ada@example.com", "customer", "old", "1h", tok, tok_id, &err), 0);
  const char *p[] = {tok_id};
  PQclear(sbtest_query(db, "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", 1, p));
  ASSERT_HTTP(401, "unauthorized", 0, "GET", "/v1/plans", tok, NULL);
  /* A customer may not get an operator token. */
  assert_int_not_equal(sb_token_create(db, "ada@example.com", "operator", "x", NULL, tok, NULL, &err), 0);
  assert_true(engine_alive(0));
}

/* ---- isolation --------------------------------------------------------------------------- */

static void test_customer_isolation(void **state) {
  (void)state;
  char ada_inst[37], bob_inst[37];
  fake_instance(ada_id, "ada-iso", ada_inst);
  fake_instance(bob_id, "bob-iso", bob_inst);
  insert_events("test.mine", ada_id, ada_inst, 3);

  /* HTTP: Bob sees none of Ada's. */
  char path[160];
  snprintf(path, sizeof path, "/v1/instances/%s", ada_inst);
  ASSERT_HTTP(404, "not_found", 0, "GET", path, bob_token, NULL);
  ASSERT_HTTP(404, "not_found", 0, "DELETE", path, bob_token, NULL);
  snprintf(path, sizeof path, "/v1/instances/%s/events", ada_inst);
  ASSERT_HTTP(404, "not_found", 0, "GET", path, bob_token, NULL);
  assert_int_equal(http(0, "GET", "/v1/instances", bob_token, NULL), 200);
  lua_getfield(J, -1, "instances");
  assert_int_equal(lua_rawlen(J, -1), 1);
  lua_pop(J, 1);
  assert_string_equal(field("instances.1.id"), bob_inst);
  snprintf(path, sizeof path, "/v1/instances?user_id=%s", ada_id);
  ASSERT_HTTP(403, "forbidden", 0, "GET", path, bob_token, NULL);
  assert_int_equal(scalar_ll("SELECT count(*) FROM instances WHERE id = $1 AND status = 'failed'",
                             1, (const char *[]){ada_inst}), 1);

  /* Row-level security: even a query that forgets its WHERE sees only Bob's rows. */
  const char *bp[] = {bob_id};
  PQclear(sbtest_query(db, "BEGIN", 0, NULL));
  PQclear(sbtest_query(db, "SELECT set_config('role', 'sb_api_customer', true), "
                           "set_config('sb.user_id', $1, true)", 1, bp));
  char *rows = scalar("SELECT count(*) || '/' || count(*) FILTER (WHERE user_id = "
                      "current_setting('sb.user_id')::uuid) FROM instances", 0, NULL);
  char *evs = scalar("SELECT count(*) FROM instance_events WHERE user_id <> "
                     "current_setting('sb.user_id')::uuid OR user_id IS NULL", 0, NULL);
  const char *denied = sbtest_error_state(db, "SELECT count(*) FROM jobs", 0, NULL);
  char state_copy[8];
  snprintf(state_copy, sizeof state_copy, "%s", denied);
  PQclear(sbtest_query(db, "ROLLBACK", 0, NULL));
  assert_string_equal(rows, "1/1");
  assert_string_equal(evs, "0");
  assert_string_equal(state_copy, "42501");
  free(rows);
  free(evs);

  /* Websocket: Bob cannot subscribe to Ada's instance or user, and a subscription to
   * everything carries only Bob's events. */
  sbt_ws_t *c = ws_connect(0, bob_token);
  char msg[256];
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"a\",\"filter\":{\"instance_id\":\"%s\"}}", ada_inst);
  assert_string_equal(subscribe(c, msg), "not_found");
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"b\",\"filter\":{\"user_id\":\"%s\"}}", ada_id);
  assert_string_equal(subscribe(c, msg), "forbidden");
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"c\",\"filter\":{\"instance_id\":\"%s\"}}", bob_inst);
  assert_string_equal(subscribe(c, msg), "");
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"all\"}"), "");
  int64_t from = max_seq();
  insert_events("test.ada", ada_id, ada_inst, 5);
  insert_events("server.test", NULL, NULL, 5);
  insert_events("test.bob", bob_id, bob_inst, 5);
  got_t g = {0};
  collect(c, &g, 5, 3000);
  collect_one(c, &g, 500); /* anything more would be a leak */
  for (int i = 0; i < g.n; i++) assert_string_equal(g.users[i], bob_id);
  assert_exactly(&g, from, 0, bob_id);
  got_free(&g);
  sbt_ws_free(c);

  /* Resuming from 0, with Bob's events pushed out of the memory ring by 9,000 of
   * Ada's, replays from the database: still only Bob's, and not "too old" though Bob's
   * first event is not the oldest kept. */
  insert_events("test.ada", ada_id, ada_inst, 9000);
  c = ws_connect(0, bob_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"all\",\"last_id\":0}"), "");
  collect(c, &g, 5, 3000);
  while (!g.replayed && collect_one(c, &g, 2000)) {
  }
  assert_int_equal(g.replayed, 1);
  assert_int_equal(g.too_old, 0);
  assert_exactly(&g, 0, 0, bob_id);
  got_free(&g);
  sbt_ws_free(c);

  /* The query layer alone isolates too: with row-level security switched off (on the
   * test's own database), every query still names the token's user. */
  PQclear(sbtest_query(db, "ALTER TABLE instances DISABLE ROW LEVEL SECURITY", 0, NULL));
  PQclear(sbtest_query(db, "ALTER TABLE instance_events DISABLE ROW LEVEL SECURITY", 0, NULL));
  snprintf(path, sizeof path, "/v1/instances/%s", ada_inst);
  ASSERT_HTTP(404, "not_found", 0, "GET", path, bob_token, NULL);
  ASSERT_HTTP(404, "not_found", 0, "DELETE", path, bob_token, NULL);
  snprintf(path, sizeof path, "/v1/instances/%s/events", ada_inst);
  ASSERT_HTTP(404, "not_found", 0, "GET", path, bob_token, NULL);
  /* Suspend and resume are for operators: a customer is refused before any lookup. */
  snprintf(path, sizeof path, "/v1/instances/%s/suspend", ada_inst);
  ASSERT_HTTP(403, "forbidden", 0, "POST", path, bob_token, NULL);
  snprintf(path, sizeof path, "/v1/instances/%s/resume", ada_inst);
  ASSERT_HTTP(403, "forbidden", 0, "POST", path, bob_token, NULL);
  c = ws_connect(0, bob_token);
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"a\",\"filter\":{\"instance_id\":\"%s\"}}", ada_inst);
  assert_string_equal(subscribe(c, msg), "not_found");
  sbt_ws_free(c);
  assert_int_equal(scalar_ll("SELECT count(*) FROM instances WHERE id = $1 AND status = 'failed'",
                             1, (const char *[]){ada_inst}), 1);
  PQclear(sbtest_query(db, "ALTER TABLE instances ENABLE ROW LEVEL SECURITY", 0, NULL));
  PQclear(sbtest_query(db, "ALTER TABLE instance_events ENABLE ROW LEVEL SECURITY", 0, NULL));
}

/* ---- two engines --------------------------------------------------------------------------- */

/* ---- input checks ----------------------------------------------------------------------- */

/* What a request can change: every instance (the columns requests set), their jobs and
 * their events. The same before and after a refused request. */
static char *request_state(void) {
  return scalar("SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(concat_ws('|', id, "
                "user_id, plan_id, status, status_reason, name, subdomain, region), ',' "
                "ORDER BY id)), '') FROM instances) || '/' || (SELECT count(*) FROM jobs "
                "WHERE instance_id IS NOT NULL) || '/' || (SELECT count(*) FROM instance_events "
                "WHERE instance_id IS NOT NULL)",
                0, NULL);
}

/* An instance row in a given status, without provisioning; its id into id. */
static void fake_instance_in(const char *user, const char *sub, const char *status, char *id) {
  const char *p[] = {user, sub, status};
  char *v = scalar("INSERT INTO instances (user_id, name, subdomain, status) "
                   "VALUES ($1, $2, $2, $3) RETURNING id",
                   3, p);
  snprintf(id, 37, "%s", v);
  free(v);
}

/* A request to engine 0 with a Content-Type of the caller's (NULL: application/json when
 * there is a body). The answer must be UTF-8 (PostgreSQL's text, which takes nothing
 * else, is the judge) and JSON; it is decoded onto J's stack top. */
static long http_ct(const char *content_type, const char *method, const char *path,
                    const char *token, const char *body) {
  long status;
  char *text = sbt_http(ports[0], method, path, token, content_type, body, &status);
  const char *p[] = {text};
  if (strcmp(sbtest_error_state(db, "SELECT $1::text", 1, p), "") != 0)
    fail_msg("%s %.80s: the answer is not UTF-8: %.200s", method, path, text);
  lua_settop(J, 0);
  sb_error_t err;
  if (sb_lua_json_decode(J, text, strlen(text), &err) != 0)
    fail_msg("%s %.80s: the answer (%ld) is not JSON: %.200s", method, path, status, text);
  free(text);
  return status;
}

/* A refused request: status, code and, when want_field is not NULL, the field named. */
static void expect_refused(const char *content_type, const char *method, const char *path,
                           const char *token, const char *body, long want, const char *code,
                           const char *want_field) {
  long got = http_ct(content_type, method, path, token, body);
  char got_code[64], got_field[128];
  snprintf(got_code, sizeof got_code, "%s", field("error.code"));
  snprintf(got_field, sizeof got_field, "%s", field("error.field"));
  if (got != want || strcmp(got_code, code) != 0 || (want_field && strcmp(got_field, want_field) != 0))
    fail_msg("%s %.80s %.100s: expected %ld %s (field %s), got %ld %s (field '%s': %s)", method,
             path, body ? body : "", want, code, want_field ? want_field : "-", got, got_code,
             got_field, field("error.message"));
}

/* A request made on a thread of its own (GET when method is NULL); the answer in body. */
typedef struct request {
  const char *path, *token;
  long status;
  char *body;
  const char *method, *send; /* and what it sends */
} request_t;

static void *run_request(void *arg) {
  request_t *r = arg;
  r->body = sbt_http(ports[0], r->method ? r->method : "GET", r->path, r->token, NULL, r->send,
                     &r->status);
  return NULL;
}

/* Two creates at once for one user, on a plan that allows one instance: one is made, the
 * other refused. Both are held at their first write (the test locks jobs) so that, were
 * the user's instances counted without the user's lock, both would count none. */
static void test_create_race(void **state) {
  (void)state;
  char carol_id[37], carol_token[64];
  make_user("carol@example.com", "customer", carol_id, carol_token);
  PQclear(sbtest_query(db, "UPDATE plans SET max_instances = 1 WHERE code = 'hobby'", 0, NULL));
  request_t calls[2] = {
      {.method = "POST", .path = "/v1/instances", .token = carol_token,
       .send = "{\"plan\": \"hobby\", \"name\": \"c1\", \"subdomain\": \"carol-1\"}"},
      {.method = "POST", .path = "/v1/instances", .token = carol_token,
       .send = "{\"plan\": \"hobby\", \"name\": \"c2\", \"subdomain\": \"carol-2\"}"}};
  long long before_count = count_instances();
  PQclear(sbtest_query(db, "BEGIN", 0, NULL));
  PQclear(sbtest_query(db, "LOCK TABLE jobs IN SHARE MODE", 0, NULL));
  pthread_t t[2];
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, run_request, &calls[i]), 0);
  usleep(1500000); /* both are in the database by now, waiting */
  PQclear(sbtest_query(db, "COMMIT", 0, NULL));
  int made = 0, refused = 0;
  for (int i = 0; i < 2; i++) {
    pthread_join(t[i], NULL);
    lua_settop(J, 0);
    sb_error_t err;
    if (sb_lua_json_decode(J, calls[i].body, strlen(calls[i].body), &err) != 0) lua_pushnil(J);
    if (calls[i].status == 202) made++;
    else if (calls[i].status == 403 && strcmp(field("error.code"), "refused") == 0) refused++;
    else fail_msg("create %d: %ld %s", i, calls[i].status, calls[i].body);
    free(calls[i].body);
  }
  assert_int_equal(made, 1);
  assert_int_equal(refused, 1);
  assert_int_equal(count_instances(), before_count + 1);
  assert_int_equal(scalar_ll("SELECT count(*) FROM instances WHERE user_id = $1", 1,
                             (const char *[]){carol_id}),
                   1);
}

/* Resume and DELETE take no fields, suspend only a reason: anything else in the body is
 * refused before anything changes; no body, or {}, is carried out. */
static void test_lifecycle_bodies(void **state) {
  (void)state;
  char suspended[2][37], active[2][37], path[3][160];
  fake_instance_in(ada_id, "ada-s0", "suspended", suspended[0]);
  fake_instance_in(ada_id, "ada-s1", "suspended", suspended[1]);
  fake_instance_in(ada_id, "ada-a0", "active", active[0]);
  fake_instance_in(ada_id, "ada-a1", "active", active[1]);
  snprintf(path[0], sizeof path[0], "/v1/instances/%s/resume", suspended[0]);
  snprintf(path[1], sizeof path[1], "/v1/instances/%s", active[0]);
  snprintf(path[2], sizeof path[2], "/v1/instances/%s/suspend", active[0]);
  const char *method[] = {"POST", "DELETE", "POST"}, *token[] = {op_token, ada_token, op_token};
  const struct {
    const char *content_type, *body;
    long status;
    const char *code, *field; /* field: for resume and DELETE */
  } bad[] = {
      {NULL, "{\"foo\": 1}", 400, "unknown_field", "foo"},
      {NULL, "{\"reason\": \"x\", \"foo\": \"y\"}", 400, "unknown_field", NULL},
      {NULL, "{not json", 400, "bad_request", NULL},
      {NULL, "[]", 400, "bad_request", NULL},
      {NULL, "[\"reason\"]", 400, "bad_request", NULL},
      {NULL, "\"{}\"", 400, "bad_request", NULL},
      {NULL, "null", 400, "bad_request", NULL},
      {"text/plain", "{}", 415, "unsupported_media_type", NULL},
      {"application/x-www-form-urlencoded", "reason=x", 415, "unsupported_media_type", NULL},
  };
  char *before = request_state();
  for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++)
    for (int r = 0; r < 3; r++)
      expect_refused(bad[i].content_type, method[r], path[r], token[r], bad[i].body, bad[i].status,
                     bad[i].code, r < 2 ? bad[i].field : NULL);
  expect_refused(NULL, "POST", path[0], op_token, "{\"reason\": \"payment_overdue\"}", 400,
                 "unknown_field", "reason");
  expect_refused(NULL, "DELETE", path[1], ada_token, "{\"reason\": \"payment_overdue\"}", 400,
                 "unknown_field", "reason");
  expect_refused(NULL, "POST", path[2], op_token, "{\"reason\": 5}", 400, "invalid_field", "reason");
  char *after = request_state();
  assert_string_equal(after, before);
  free(before);
  free(after);

  /* No body, or an empty object: carried out. */
  assert_int_equal(http_ct(NULL, "POST", path[0], op_token, NULL), 202);
  assert_string_equal(field("job.kind"), "instance.resume");
  snprintf(path[0], sizeof path[0], "/v1/instances/%s/resume", suspended[1]);
  assert_int_equal(http_ct(NULL, "POST", path[0], op_token, " {} "), 202);
  assert_int_equal(http_ct(NULL, "DELETE", path[1], ada_token, NULL), 202);
  assert_string_equal(field("instance.status"), "deleting");
  snprintf(path[1], sizeof path[1], "/v1/instances/%s", active[1]);
  assert_int_equal(http_ct(NULL, "DELETE", path[1], ada_token, "{}"), 202);
  assert_string_equal(field("instance.status"), "deleting");
}

/* Text fields: a NUL, invalid UTF-8, a bad format or length, an unknown region: 400
 * invalid_field naming the field, nothing made; lengths count characters. Every answer,
 * even one echoing a bad byte, is UTF-8 JSON. */
static void test_text_fields(void **state) {
  (void)state;
  char long_name[2 * 101 + 1], long_region[60100], body[61000], sub64[65];
  memset(sub64, 'a', 64);
  sub64[64] = '\0';
  memset(long_name, 'x', 101);
  long_name[101] = '\0';
  int k = snprintf(long_region, sizeof long_region, ", \"region\": \"");
  memset(long_region + k, 'a', 60000);
  snprintf(long_region + k + 60000, sizeof long_region - (size_t)k - 60000, "\"");
  const struct {
    const char *plan, *name, *subdomain, *extra; /* extra: more members, or "" */
    const char *code, *field;
  } bad[] = {
      /* A NUL (cut short by C, it would be another value). */
      {"starter", "a\\u0000b", "t-1", "", "invalid_field", "name"},
      {"hobby\\u0000x", "x", "t-1", "", "invalid_field", "plan"},
      {"starter", "x", "t-1\\u0000zz", "", "invalid_field", "subdomain"},
      {"starter", "x", "t-1", ", \"region\": \"local\\u0000x\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"plan\\u0000x\": \"hobby\"", "unknown_field", "plan\xef\xbf\xbdx"},
      /* Not UTF-8: a stray byte, an overlong form, a surrogate. */
      {"starter", "a\xff", "t-1", "", "invalid_field", "name"},
      {"st\xff" "arter", "x", "t-1", "", "invalid_field", "plan"},
      {"starter", "\xc0\xaf", "t-1", "", "invalid_field", "name"},
      {"starter", "\xed\xa0\x80", "t-1", "", "invalid_field", "name"},
      {"starter", "x", "t-1", ", \"\xff\": \"x\"", "unknown_field", "\xef\xbf\xbd"},
      /* Formats and lengths. */
      {"starter", "x", "A_X", "", "invalid_field", "subdomain"},
      {"starter", "x", "-ax", "", "invalid_field", "subdomain"},
      {"starter", "x", sub64, "", "invalid_field", "subdomain"},
      {"starter", "", "t-1", "", "invalid_field", "name"},
      {"starter", long_name, "t-1", "", "invalid_field", "name"},
      {"platinum", "x", "t-1", "", "invalid_field", "plan"},
      {"starter", "x", "t-1", ", \"user_id\": \"not-a-uuid\"", "invalid_field", "user_id"},
      /* Regions: a DNS label the fleet has. */
      {"starter", "x", "t-1", ", \"region\": \"mars\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"region\": \"\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"region\": \"US-EAST-1\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"region\": \"us_east\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"region\": \"-local\"", "invalid_field", "region"},
      {"starter", "x", "t-1", ", \"region\": 7", "invalid_field", "region"},
      {"starter", "x", "t-1", long_region, "invalid_field", "region"},
  };
  char *before = request_state();
  for (size_t i = 0; i < SB_ARRAY_LEN(bad); i++) {
    snprintf(body, sizeof body, "{\"plan\": \"%s\", \"name\": \"%s\", \"subdomain\": \"%s\"%s}",
             bad[i].plan, bad[i].name, bad[i].subdomain, bad[i].extra);
    expect_refused(NULL, "POST", "/v1/instances", ada_token, body, 400, bad[i].code, bad[i].field);
  }
  /* 101 characters of two bytes each. */
  long_name[0] = '\0';
  for (int i = 0; i < 101; i++) strcat(long_name, "\xc3\xa9");
  snprintf(body, sizeof body, "{\"plan\": \"starter\", \"name\": \"%s\", \"subdomain\": \"t-1\"}", long_name);
  expect_refused(NULL, "POST", "/v1/instances", ada_token, body, 400, "invalid_field", "name");
  /* A user that does not exist. */
  snprintf(body, sizeof body, "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"t-1\", "
           "\"user_id\": \"00000000-0000-4000-8000-000000000000\"}");
  expect_refused(NULL, "POST", "/v1/instances", op_token, body, 400, "invalid_field", "user_id");
  /* A suspend reason with a NUL or a bad byte. */
  char inst[37], path[160];
  fake_instance_in(ada_id, "ada-text", "active", inst);
  free(before);
  before = request_state();
  snprintf(path, sizeof path, "/v1/instances/%s/suspend", inst);
  expect_refused(NULL, "POST", path, op_token, "{\"reason\": \"late\\u0000x\"}", 400, "invalid_field", "reason");
  expect_refused(NULL, "POST", path, op_token, "{\"reason\": \"late\xff\"}", 400, "invalid_field", "reason");
  /* Bad bytes in what an error echoes. */
  expect_refused(NULL, "GET", "/v1/instances/%ff", ada_token, NULL, 404, "not_found", NULL);
  expect_refused(NULL, "GET", "/v1/instances/%ff/events", ada_token, NULL, 404, "not_found", NULL);
  expect_refused(NULL, "DELETE", "/v1/instances/%ff", ada_token, NULL, 404, "not_found", NULL);
  expect_refused(NULL, "GET", "/v1/nothing%ff", ada_token, NULL, 404, "not_found", NULL);
  expect_refused(NULL, "GET", "/nothing%ff", NULL, NULL, 404, "not_found", NULL);
  char *after = request_state();
  assert_string_equal(after, before);
  free(before);
  free(after);

  /* 100 characters of two bytes each, in the fleet's region: made, as they were given. */
  long_name[200] = '\0';
  snprintf(body, sizeof body, "{\"plan\": \"starter\", \"name\": \"%s\", \"subdomain\": \"t-1\", "
           "\"region\": \"local\"}", long_name);
  assert_int_equal(http_ct(NULL, "POST", "/v1/instances", ada_token, body), 202);
  assert_string_equal(field("instance.name"), long_name);
  assert_string_equal(field("instance.region"), "local");
}

/* Query parameters that are not text, cursors the API did not give, media types, and ids
 * in upper case (the same ids: compared canonical, lower case). */
static void test_query_and_types(void **state) {
  (void)state;
  char inst[37], upper_inst[37], upper_ada[37], path[256];
  fake_instance(ada_id, "ada-case", inst);
  for (int i = 0; i < 37; i++) {
    upper_inst[i] = inst[i] >= 'a' && inst[i] <= 'f' ? (char)(inst[i] - 'a' + 'A') : inst[i];
    upper_ada[i] = ada_id[i] >= 'a' && ada_id[i] <= 'f' ? (char)(ada_id[i] - 'a' + 'A') : ada_id[i];
  }
  char *before = request_state();
  const char *bad_queries[][2] = {
      /* (A %00 never gets here: libwebsockets drops the connection.) */
      {"status=%ff", "status"}, {"status=%c0%af", "status"}, {"status=act%ffive", "status"}, {"user_id=%ff", "user_id"}, {"limit=%ff", "limit"},
      {"cursor=%ff", "cursor"},
      {"cursor=1e5.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=-1.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=0.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=%2b5.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=05.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=9223372036854775808.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=5.not-a-uuid", "cursor"}, {"cursor=5", "cursor"},
      {"cursor=.00000000-0000-0000-0000-000000000000", "cursor"},
      {"cursor=5.00000000-0000-0000-0000-000000000000x", "cursor"},
  };
  for (size_t i = 0; i < SB_ARRAY_LEN(bad_queries); i++) {
    snprintf(path, sizeof path, "/v1/instances?%s", bad_queries[i][0]);
    expect_refused(NULL, "GET", path, ada_token, NULL, 400, "bad_request", bad_queries[i][1]);
  }
  snprintf(path, sizeof path, "/v1/instances/%s/events?after=%%ff", inst);
  expect_refused(NULL, "GET", path, ada_token, NULL, 400, "bad_request", "after");
  /* A cursor as the API makes them, in either case. */
  assert_int_equal(http_ct(NULL, "GET", "/v1/instances?cursor=9223372036854775807.00000000-0000-0000-0000-00000000000A",
                           ada_token, NULL), 200);

  /* The media type, case-insensitively, parameters allowed; nothing else. A body with
   * an unknown field tells a body read as JSON (400) from one refused unread (415). */
  const char *unknown = "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"t-2\", \"tier\": \"x\"}";
  const char *json_types[] = {"Application/JSON", "application/json; charset=utf-8",
                              "APPLICATION/JSON;charset=UTF-8", "application/json ; q=1"};
  for (size_t i = 0; i < SB_ARRAY_LEN(json_types); i++)
    expect_refused(json_types[i], "POST", "/v1/instances", ada_token, unknown, 400, "unknown_field", "tier");
  const char *other_types[] = {"application/jsonx", "application/json-seq", "text/plain",
                               "application/problem+json", "text/json", "application"};
  for (size_t i = 0; i < SB_ARRAY_LEN(other_types); i++)
    expect_refused(other_types[i], "POST", "/v1/instances", ada_token, unknown, 415,
                   "unsupported_media_type", NULL);

  /* Ids in upper case are the same ids; other users' stay refused. */
  snprintf(path, sizeof path, "/v1/instances?user_id=%s", upper_ada);
  expect_refused(NULL, "GET", path, bob_token, NULL, 403, "forbidden", "user_id");
  snprintf(path, sizeof path, "/v1/instances/%s", upper_inst);
  expect_refused(NULL, "GET", path, bob_token, NULL, 404, "not_found", NULL);
  char *after = request_state();
  assert_string_equal(after, before);
  free(before);
  free(after);
  snprintf(path, sizeof path, "/v1/instances?user_id=%s", upper_ada);
  assert_int_equal(http_ct(NULL, "GET", path, ada_token, NULL), 200);
  assert_string_equal(field("instances.1.id"), inst);
  snprintf(path, sizeof path, "/v1/instances/%s", upper_inst);
  assert_int_equal(http_ct(NULL, "GET", path, ada_token, NULL), 200);
  assert_string_equal(field("instance.id"), inst);
  snprintf(path, sizeof path, "/v1/instances/%s/events", upper_inst);
  assert_int_equal(http_ct(NULL, "GET", path, ada_token, NULL), 200);
  char body[256];
  snprintf(body, sizeof body, "{\"plan\": \"starter\", \"name\": \"x\", \"subdomain\": \"t-3\", "
           "\"user_id\": \"%s\"}", upper_ada);
  assert_int_equal(http_ct("Application/JSON", "POST", "/v1/instances", ada_token, body), 202);
  assert_string_equal(field("instance.user_id"), ada_id);
  snprintf(path, sizeof path, "/v1/instances/%s", upper_inst);
  assert_int_equal(http_ct(NULL, "DELETE", path, ada_token, NULL), 202);
  assert_string_equal(field("instance.id"), inst);
}

static void test_two_engines(void **state) {
  (void)state;
  start_engine(1);
  /* Authenticated by its first message (as browsers do), on engine 1. */
  sbt_ws_t *c = sbt_ws_connect(ports[1], "/v1/events", NULL, NULL);
  assert_non_null(c);
  sbt_ws_send(c, "{\"type\":\"subscribe\",\"id\":\"x\"}", -1);
  char *m = sbt_ws_recv_type(c, "error", 3000);
  assert_non_null(m);
  assert_non_null(strstr(m, "unauthorized"));
  free(m);
  char auth[128];
  snprintf(auth, sizeof auth, "{\"type\":\"auth\",\"token\":\"%s\"}", op_token);
  sbt_ws_send(c, auth, -1);
  /* Sent right behind auth: read after the token is checked, not refused. */
  sbt_ws_send(c, "{\"type\":\"subscribe\",\"id\":\"all\",\"filter\":{\"types\":[\"created\",\"test.*\"]}}", -1);
  m = sbt_ws_recv_type(c, "subscribed", 5000);
  assert_non_null(m);
  free(m);
  sbt_ws_send(c, "{\"type\":\"ping\"}", -1);
  m = sbt_ws_recv_type(c, "pong", 3000);
  assert_non_null(m);
  free(m);

  /* An API request served by engine 0 ... */
  int64_t from = max_seq();
  assert_int_equal(http(0, "POST", "/v1/instances", ada_token,
                        "{\"plan\": \"starter\", \"name\": \"e\", \"subdomain\": \"two-engines\"}"),
                   202);
  char inst[37];
  snprintf(inst, sizeof inst, "%s", field("instance.id"));
  /* ... and a script's SQL, straight into the database. */
  char mine[37];
  fake_instance(ada_id, "script-made", mine);
  insert_events("test.script", ada_id, mine, 1);
  got_t g = {0};
  collect(c, &g, 2, 5000);
  assert_int_equal(g.n, 2);
  const char *p[] = {inst};
  char *created = scalar("SELECT seq FROM instance_events WHERE instance_id = $1 AND event_type = 'created'", 1, p);
  assert_int_equal(g.ids[0], atoll(created));
  assert_true(g.ids[0] > from && g.ids[1] > g.ids[0]);
  free(created);
  got_free(&g);
  sbt_ws_free(c);
}

/* ---- paced fan-out passes ------------------------------------------------------------------- */

/* events_fanout_busy_pct = 1: after each pass the next waits 99 times as long, and
 * events_coalesce_us = 0 reads on every NOTIFY, so events committed one by one, 2 ms
 * apart, arrive while a pass is put off: the pass that was due takes them all. Every
 * client gets every event, in order, and in far fewer messages than events (without
 * the pacing each event is its own message: with the setting at 100, 199 of 200; at 1,
 * 4). */
static void test_paced_fanout(void **state) {
  (void)state;
  enum { CLIENTS = 100, EVENTS = 200 };
  stop_engine(1, SIGTERM);
  setenv("SOLOBASE_EVENTS_FANOUT_BUSY_PCT", "1", 1);
  setenv("SOLOBASE_EVENTS_COALESCE_US", "0", 1);
  start_engine(1);
  unsetenv("SOLOBASE_EVENTS_FANOUT_BUSY_PCT");
  unsetenv("SOLOBASE_EVENTS_COALESCE_US");
  sbt_ws_t *c[CLIENTS];
  for (int i = 0; i < CLIENTS; i++) {
    c[i] = ws_connect(1, op_token);
    assert_string_equal(subscribe(c[i], "{\"type\":\"subscribe\",\"id\":\"p\","
                                        "\"filter\":{\"types\":[\"test.paced\"]}}"), "");
  }
  int64_t from = max_seq();
  uint64_t t0 = sb_now_ns();
  for (int i = 0; i < EVENTS; i++) {
    PQclear(sbtest_query(db, "INSERT INTO instance_events (event_type) VALUES ('test.paced')", 0, NULL));
    usleep(2000);
  }
  int64_t upto = max_seq();
  for (int i = 0; i < CLIENTS; i++) {
    got_t g = {0};
    collect(c[i], &g, EVENTS, 5000);
    assert_exactly(&g, from, upto, NULL);
    if (g.messages > EVENTS / 2)
      fail_msg("client %d: %d events in %d messages: the passes were not paced", i, g.n, g.messages);
    got_free(&g);
    sbt_ws_free(c[i]);
  }
  double took = (double)(sb_now_ns() - t0) / 1e9;
  if (took > 10) fail_msg("%d events reached %d clients in %.1f s", EVENTS, CLIENTS, took);
  stop_engine(1, SIGTERM); /* the tests after this one do not run with its settings */
}

/* ---- resume --------------------------------------------------------------------------------- */

typedef struct writer {
  volatile bool stop;
  int batches;
  char user[37], inst[37];
} writer_t;

static void *write_events(void *arg) {
  writer_t *w = arg;
  sb_error_t err;
  sb_db_t *conn = sb_db_connect(url, NULL, "test writer", &err);
  assert_non_null(conn);
  while (!w->stop) {
    const char *p[] = {w->user, w->inst};
    PGresult *res = sb_db_query(conn,
                                "INSERT INTO instance_events (event_type, user_id, instance_id) "
                                "SELECT 'test.live', $1::uuid, $2::uuid FROM generate_series(1, 3)",
                                2, p, &err);
    if (!res) fail_msg("%s", err.msg);
    PQclear(res);
    w->batches++;
    usleep(2000);
  }
  sb_db_free(conn);
  return NULL;
}

static void test_resume(void **state) {
  (void)state;
  char inst[37];
  fake_instance(ada_id, "resume", inst);
  insert_events("test.before", ada_id, inst, 50);
  int64_t start = max_seq();

  /* A client sees 50 events, keeps the id of the 20th, and goes away. */
  sbt_ws_t *c = ws_connect(0, ada_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  insert_events("test.seen", ada_id, inst, 50);
  got_t g = {0};
  collect(c, &g, 50, 5000);
  assert_exactly(&g, start, 0, ada_id);
  int64_t kept = g.ids[19];
  got_free(&g);
  sbt_ws_free(c);

  /* While it is away, and while it resumes, events keep coming (a writer thread). */
  insert_events("test.missed", ada_id, inst, 30);
  writer_t w = {.stop = false};
  snprintf(w.user, sizeof w.user, "%s", ada_id);
  snprintf(w.inst, sizeof w.inst, "%s", inst);
  pthread_t t;
  pthread_create(&t, NULL, write_events, &w);
  usleep(100000);
  c = ws_connect(0, ada_token);
  char msg[128];
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"s\",\"last_id\":%lld}", (long long)kept);
  assert_string_equal(subscribe(c, msg), "");
  while (!g.replayed && collect_one(c, &g, 3000)) {
  }
  assert_int_equal(g.replayed, 1);
  usleep(300000);
  w.stop = true;
  pthread_join(t, NULL);
  int64_t end = max_seq();
  int want;
  free(expected_ids(kept, end, ada_id, &want));
  collect(c, &g, want, 3000);
  /* Exactly everything after the kept id: the replay, then live, no gap, no duplicate. */
  assert_true(w.batches > 5);
  assert_exactly(&g, kept, end, ada_id);
  got_free(&g);
  sbt_ws_free(c);

  /* Older than the ring (8192 events in memory): read from the database in pages. */
  int64_t old = max_seq();
  insert_events("test.bulk", ada_id, inst, 10000);
  c = ws_connect(0, op_token);
  snprintf(msg, sizeof msg,
           "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":{\"types\":[\"test.*\"]},\"last_id\":%lld}",
           (long long)old);
  assert_string_equal(subscribe(c, msg), "");
  collect(c, &g, 10000, 5000);
  assert_exactly(&g, old, 0, NULL);
  got_free(&g);
  sbt_ws_free(c);

  /* After archiving, a resume from before the oldest kept event is told so. */
  char cut[32];
  snprintf(cut, sizeof cut, "%lld", (long long)start);
  const char *p[] = {cut};
  PQclear(sbtest_query(db, "DELETE FROM instance_events WHERE seq <= $1::bigint + 10", 1, p));
  c = ws_connect(0, op_token);
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"s\",\"last_id\":%lld}", (long long)start);
  assert_string_equal(subscribe(c, msg), "");
  while (!g.too_old && collect_one(c, &g, 3000)) {
  }
  assert_int_equal(g.too_old, 1);
  assert_int_equal(g.n, 0);
  got_free(&g);
  sbt_ws_free(c);
}

/* ---- malformed input --------------------------------------------------------------------- */

static void expect_error(sbt_ws_t *c, const char *send, long len, const char *code) {
  sbt_ws_send(c, send, len);
  char *m = sbt_ws_recv(c, 3000);
  if (!m) fail_msg("no answer to %.60s", send);
  lua_settop(J, 0);
  sb_error_t err;
  assert_int_equal(sb_lua_json_decode(J, m, strlen(m), &err), 0);
  if (strcmp(field("type"), "error") != 0 || strcmp(field("code"), code) != 0)
    fail_msg("sent %.60s: expected error %s, got %s", send, code, m);
  free(m);
}

static void test_malformed(void **state) {
  (void)state;
  sbt_ws_t *c = ws_connect(0, op_token);
  expect_error(c, "not json", -1, "bad_message");
  expect_error(c, "[1,2,3]", -1, "bad_message");
  expect_error(c, "{\"type\": 12}", -1, "bad_message");
  expect_error(c, "{\"type\":\"dance\"}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\"}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\",\"id\":\"x\",\"filter\":\"all\"}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\",\"id\":\"x\",\"filter\":{\"instance_id\":5}}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\",\"id\":\"x\",\"filter\":{\"colour\":\"red\"}}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\",\"id\":\"x\",\"last_id\":-4}", -1, "bad_message");
  expect_error(c, "{\"type\":\"subscribe\",\"id\":\"x\",\"last_id\":\"7\"}", -1, "bad_message");
  expect_error(c, "{\"type\":\"unsubscribe\",\"id\":\"nope\"}", -1, "unknown_subscription");
  expect_error(c, "{\"type\":\"auth\",\"token\":\"again\"}", -1, "bad_message");
  /* Unknown top-level fields are refused, named in the message, whatever the type. */
  const char *extra[] = {"{\"type\":\"ping\",\"colour\":\"red\"}",
                         "{\"type\":\"subscribe\",\"id\":\"x\",\"colour\":{}}",
                         "{\"type\":\"unsubscribe\",\"id\":\"x\",\"colour\":1}"};
  for (size_t i = 0; i < SB_ARRAY_LEN(extra); i++) {
    sbt_ws_send(c, extra[i], -1);
    char *e = sbt_ws_recv(c, 3000);
    if (!e || !strstr(e, "\"bad_message\"") || !strstr(e, "colour"))
      fail_msg("sent %s: expected bad_message naming colour, got %s", extra[i], e ? e : "nothing");
    free(e);
  }
  char *big = sb_xmalloc(80 * 1024);
  memset(big, 'x', 80 * 1024);
  expect_error(c, big, 80 * 1024, "bad_message");
  free(big);
  /* Still usable. */
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"ok\"}"), "");
  sbt_ws_send(c, "{\"type\":\"unsubscribe\",\"id\":\"ok\"}", -1);
  char *m = sbt_ws_recv_type(c, "unsubscribed", 3000);
  assert_non_null(m);
  free(m);

  /* A bad token on the upgrade is refused in the stream, and the 10 s auth deadline is
   * not needed to find out. */
  sbt_ws_t *bad = sbt_ws_connect(ports[0], "/v1/events", "sbt_nope", NULL);
  assert_non_null(bad);
  m = sbt_ws_recv_type(bad, "error", 3000);
  assert_non_null(m);
  assert_non_null(strstr(m, "unauthorized"));
  free(m);
  sbt_ws_free(bad);

  /* Invalid UTF-8 in a text frame is a protocol violation: that connection closes
   * (1007), the others go on. */
  sbt_ws_t *v = ws_connect(0, op_token);
  sbt_ws_send(v, "{\"type\":\"ping\",\"x\":\"\xff\xfe\"}", -1);
  assert_int_equal(sbt_ws_wait_closed(v, 3000), 1007);
  sbt_ws_free(v);
  sbt_ws_send(c, "{\"type\":\"ping\"}", -1);
  m = sbt_ws_recv_type(c, "pong", 3000);
  assert_non_null(m);
  free(m);
  sbt_ws_free(c);

  /* Websockets elsewhere than /v1/events are refused. */
  int st = 0;
  assert_null(sbt_ws_connect(ports[0], "/elsewhere", op_token, &st));

  /* Garbage HTTP. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ports[0])};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char junk[] = "BLORP /\x01\x02 HTTP/9.9\r\nthis is: not\r\n\r\n";
  assert_true(write(fd, junk, sizeof junk - 1) > 0);
  char buf[256] = "";
  struct timeval tv = {3, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n > 0 && (strncmp(buf, "HTTP/1.", 7) != 0 || buf[9] != '4')) fail_msg("garbage got: %.60s", buf);
  assert_true(engine_alive(0));
  assert_int_equal(http(0, "GET", "/healthz", NULL, NULL), 200);
}

/* ---- a client that never reads ------------------------------------------------------------- */

static void test_slow_client(void **state) {
  (void)state;
  sbt_ws_t *stuck = ws_connect(0, op_token);
  assert_string_equal(subscribe(stuck, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  sbt_ws_stop_reading(stuck);
  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":{\"types\":[\"test.*\"]}}"), "");
  int64_t from = max_seq();
  /* Enough events (2 kB each) to fill the stuck client's socket buffers many times
   * over, in rounds: the reading client gets each round promptly, whatever the stuck
   * one does. */
  got_t g = {0};
  uint64_t worst = 0;
  for (int round = 1; round <= 20; round++) {
    uint64_t t0 = sb_now_ns();
    PQclear(sbtest_query(db,
                         "INSERT INTO instance_events (event_type, description) "
                         "SELECT 'test.load', repeat('x', 2000) FROM generate_series(1, 1000)",
                         0, NULL));
    collect(c, &g, round * 1000, 10000);
    if (g.n != round * 1000) fail_msg("round %d: the reading client has %d events", round, g.n);
    uint64_t took = sb_now_ns() - t0;
    if (took > worst) worst = took;
  }
  assert_int_equal(g.overflow, 0);
  assert_exactly(&g, from, 0, NULL);
  got_free(&g);
  if (worst > 5000000000ull) fail_msg("a round of 1,000 events took %.1f s", (double)worst / 1e9);
  assert_int_equal(http(0, "GET", "/healthz", NULL, NULL), 200);

  /* The stuck client fell more than 4,096 events behind. Once it reads again it gets
   * what it was sent, in order, then `overflow` with the id of the last of those, then
   * a close with 4008, and nothing in between or after (docs/events.md). */
  sbt_ws_resume_reading(stuck);
  got_t sg = {0};
  while (!sg.overflow && collect_one(stuck, &sg, 5000)) {
  }
  if (!sg.overflow) fail_msg("the stuck client got %d events and no overflow", sg.n);
  assert_true(sg.n > 0);
  for (int i = 1; i < sg.n; i++)
    if (sg.ids[i] <= sg.ids[i - 1]) fail_msg("stuck client: event %d out of order", i);
  assert_int_equal(sg.overflow_last, sg.ids[sg.n - 1]);
  assert_int_equal(sbt_ws_wait_closed(stuck, 5000), 4008);
  while (collect_one(stuck, &sg, 200)) {
  }
  assert_int_equal(sg.after_overflow, 0);
  got_free(&sg);
  sbt_ws_free(c);
  sbt_ws_free(stuck);
}

/* ---- idle websockets cost nothing ----------------------------------------------------------- */

/* CPU seconds engine i has used (utime + stime of /proc/PID/stat). */
static double engine_cpu_s(int i) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)engines[i]);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  assert_non_null(p);
  unsigned long utime = 0, stime = 0;
  /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
  assert_int_equal(sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
                          &stime), 2);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Authenticated sessions with tokens that never expire, idle past the authentication
 * timer: the engine sleeps. (A timer cancelled from its own callback once re-fired for
 * ever, a core busy with 20 idle clients.) */
static void test_idle_sessions_cost_nothing(void **state) {
  (void)state;
  enum { N = 20 };
  sbt_ws_t *c[N];
  for (int i = 0; i < N; i++) {
    c[i] = ws_connect(0, op_token);
    assert_string_equal(subscribe(c[i], "{\"type\":\"subscribe\",\"id\":\"s\","
                                        "\"filter\":{\"types\":[\"test.idle\"]}}"), "");
  }
  sleep(11); /* past the server's 10 s authentication timer */
  double t0 = engine_cpu_s(0);
  sleep(2);
  double used = engine_cpu_s(0) - t0;
  if (used > 0.4) fail_msg("the engine used %.2f s of CPU in 2 s with %d idle websockets", used, N);
  for (int i = 0; i < N; i++) {
    char *m = sbt_ws_recv(c[i], 10); /* nothing they want was sent; each is still open */
    assert_null(m);
    assert_int_equal(sbt_ws_wait_closed(c[i], 10), -1);
    sbt_ws_free(c[i]);
  }
}

/* ---- revoked and expired tokens on open websockets ------------------------------------------ */

static void test_token_revoked(void **state) {
  (void)state;
  sb_error_t err;
  char tok[64], tok_id[37], inst[37];
  fake_instance(ada_id, "revoked", inst);
  assert_int_equal(sb_token_create(db, "ada@example.com", "customer", "ws", NULL, tok, tok_id, &err), 0);
  sbt_ws_t *c = ws_connect(0, tok);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  sbt_ws_t *other = ws_connect(0, ada_token); /* same user, another token */
  assert_string_equal(subscribe(other, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  insert_events("test.before", ada_id, inst, 3);
  got_t g = {0};
  collect(c, &g, 3, 3000);
  assert_int_equal(g.n, 3);

  /* Revoked (as `solobase token revoke` does it): closed with 4001 within a second or
   * two, and nothing committed after the revocation reaches it. */
  int64_t last = max_seq();
  uint64_t t0 = sb_now_ns();
  assert_int_equal(sb_token_revoke(db, tok_id, &err), 0);
  insert_events("test.after", ada_id, inst, 3);
  assert_int_equal(sbt_ws_wait_closed(c, 3000), 4001);
  if (sb_now_ns() - t0 > 2000000000ull) fail_msg("closed %.1f s after the revocation", (double)(sb_now_ns() - t0) / 1e9);
  while (collect_one(c, &g, 200)) {
  }
  for (int i = 0; i < g.n; i++)
    if (g.ids[i] > last) fail_msg("event %lld sent after the revocation", (long long)g.ids[i]);
  got_free(&g);
  sbt_ws_free(c);
  /* The other token's session goes on. */
  collect(other, &g, 6, 3000);
  assert_int_equal(g.n, 6);
  got_free(&g);
  sbt_ws_free(other);

  /* A token that expires closes its session then, with 4001, not before. */
  assert_int_equal(sb_token_create(db, "ada@example.com", "customer", "short", "3 seconds", tok, tok_id, &err), 0);
  t0 = sb_now_ns();
  c = ws_connect(0, tok);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  assert_int_equal(sbt_ws_wait_closed(c, 6000), 4001);
  double took = (double)(sb_now_ns() - t0) / 1e9;
  if (took < 1.5 || took > 5.0) fail_msg("closed %.1f s after a 3 s token was made", took);
  sbt_ws_free(c);
}

/* The 10-second authentication deadline (4401, docs/events.md) holds for a client that
 * stays silent, and for one whose `auth` is still being checked when the deadline comes
 * and then fails: the deadline's timer lets a check in flight finish, and a failed one
 * must not leave the connection open unauthenticated for ever. A client that
 * authenticated stays. */
static void test_auth_deadline(void **state) {
  (void)state;
  uint64_t t0 = sb_now_ns();
  sbt_ws_t *silent = sbt_ws_connect(ports[0], "/v1/events", NULL, NULL);
  sbt_ws_t *late = sbt_ws_connect(ports[0], "/v1/events", NULL, NULL);
  sbt_ws_t *good = ws_connect(0, ada_token);
  assert_non_null(silent);
  assert_non_null(late);
  /* The token lookup waits behind this lock until past the deadline. */
  sb_error_t err;
  sb_db_t *locker = sb_db_connect(url, NULL, "test locker", &err);
  assert_non_null(locker);
  assert_int_equal(sb_db_exec_params(locker, "BEGIN", 0, NULL, &err), 0);
  assert_int_equal(sb_db_exec_params(locker, "LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE", 0, NULL, &err), 0);
  usleep(8000000);
  char forged[128], msg[256];
  snprintf(forged, sizeof forged, "%s", ada_token); /* well formed, so it is looked up */
  forged[strlen(forged) - 1] = forged[strlen(forged) - 1] == 'A' ? 'B' : 'A';
  snprintf(msg, sizeof msg, "{\"type\":\"auth\",\"token\":\"%s\"}", forged);
  sbt_ws_send(late, msg, -1);
  assert_int_equal(sbt_ws_wait_closed(silent, 4000), 4401);
  double silent_s = (double)(sb_now_ns() - t0) / 1e9;
  if (silent_s < 9.5 || silent_s > 12.5) fail_msg("the silent client was closed after %.1f s", silent_s);
  usleep(1000000); /* past the deadline, the check still waiting */
  assert_int_equal(sb_db_exec_params(locker, "ROLLBACK", 0, NULL, &err), 0);
  sb_db_free(locker);
  char *m = sbt_ws_recv_type(late, "error", 5000);
  if (!m) fail_msg("no error for the bad token");
  assert_non_null(strstr(m, "\"unauthorized\""));
  free(m);
  assert_int_equal(sbt_ws_wait_closed(late, 3000), 4401);
  assert_string_equal(subscribe(good, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  sbt_ws_free(silent);
  sbt_ws_free(late);
  sbt_ws_free(good);
}

static int tcp_connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) fail_msg("cannot connect to %d", port);
  struct timeval tv = {5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

/* Sends req (n bytes) on a new connection and reads until the server closes it or 5 s
 * pass; the answer is in buf. */
static void raw_exchange(const char *req, size_t n, char *buf, size_t cap) {
  int fd = tcp_connect(ports[0]);
  assert_int_equal(send(fd, req, n, 0), (ssize_t)n);
  size_t got = 0;
  ssize_t r;
  while (got < cap - 1 && (r = recv(fd, buf + got, cap - 1 - got, 0)) > 0) got += (size_t)r;
  buf[got] = '\0';
  close(fd);
}

/* HTTP framing. Pipelining: a request sent right behind one with a body, before its answer.
 * libwebsockets 4.1 handed the body's completion to the engine again for every service
 * pass until the first was answered; the engine submitted the request again each time
 * and crashed (a double free) on the answers. Now the connection is closed (or, when
 * the first answer was out before the second request was read, both are answered in
 * order) and the engine goes on. The first request is refused by a worker (an unknown
 * plan), so it is in flight for a while and changes nothing. Then a chunked body,
 * a method not allowed and a request without a token, answered in JSON with their
 * headers, and HEAD. */
static void test_http_framing(void **state) {
  (void)state;
  long long before_n = count_instances();
  for (int i = 0; i < 20; i++) {
    char body[160], req[1024];
    snprintf(body, sizeof body, "{\"plan\":\"no-such-plan\",\"name\":\"pipe\",\"subdomain\":\"pipe-%d\"}", i);
    int n = snprintf(req, sizeof req,
                     "POST /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s"
                     "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                     ada_token, strlen(body), body);
    char buf[8192];
    raw_exchange(req, (size_t)n, buf, sizeof buf);
    /* Answered in order, or closed unanswered: never an answer to a request not sent. */
    if (buf[0] && strncmp(buf, "HTTP/1.1 400", 12) != 0) fail_msg("round %d answered: %.200s", i, buf);
    if (!engine_alive(0)) {
      dump_logs();
      fail_msg("the engine died on pipelined requests (round %d)", i);
    }
  }
  /* A chunked body (which libwebsockets 4.1 does not read): 411 in JSON, then closed. */
  char req[1024];
  const char *chunk = "{\"plan\":\"starter\",\"name\":\"c\",\"subdomain\":\"chunked\"}";
  int n = snprintf(req, sizeof req,
                   "POST /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "%zx\r\n%s\r\n0\r\n\r\n", ada_token, strlen(chunk), chunk);
  char buf[4096];
  raw_exchange(req, (size_t)n, buf, sizeof buf);
  if (strncmp(buf, "HTTP/1.1 411", 12) != 0 || !strstr(buf, "\"length_required\""))
    fail_msg("a chunked body was answered: %.300s", buf);
  /* A 405 says what is allowed, a 401 which scheme would do (RFC 9110). */
  n = snprintf(req, sizeof req, "PUT /v1/plans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Connection: close\r\n\r\n", ada_token);
  raw_exchange(req, (size_t)n, buf, sizeof buf);
  if (strncmp(buf, "HTTP/1.1 405", 12) != 0 || !strstr(buf, "allow: GET\r\n"))
    fail_msg("PUT /v1/plans: %.300s", buf);
  static const char anon[] = "GET /v1/plans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  raw_exchange(anon, sizeof anon - 1, buf, sizeof buf);
  if (strncmp(buf, "HTTP/1.1 401", 12) != 0 || !strstr(buf, "www-authenticate: Bearer\r\n"))
    fail_msg("GET /v1/plans without a token: %.300s", buf);
  /* HEAD: GET's status and headers, no body. */
  n = snprintf(req, sizeof req, "HEAD /v1/plans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Connection: close\r\n\r\n", ada_token);
  raw_exchange(req, (size_t)n, buf, sizeof buf);
  const char *end_of_head = strstr(buf, "\r\n\r\n");
  if (strncmp(buf, "HTTP/1.1 200", 12) != 0 || !strstr(buf, "content-length: ") || !end_of_head ||
      end_of_head[4] != '\0')
    fail_msg("HEAD /v1/plans: %.300s", buf);
  long status;
  free(sbt_http(ports[0], "GET", "/healthz", NULL, NULL, NULL, &status));
  assert_int_equal(status, 200);
  assert_int_equal(count_instances(), before_n);
}

/* Websocket input the audit found mishandled: the token in the query, filters that are
 * not what they say, ids in upper case, an unsubscribe without an id; and answers to a
 * burst of messages, which were dropped past 32 queued. */
static void test_ws_input(void **state) {
  (void)state;
  char path[160];
  snprintf(path, sizeof path, "/v1/events?access_token=%s", ada_token);
  sbt_ws_t *q = sbt_ws_connect(ports[0], path, NULL, NULL);
  assert_non_null(q);
  char *m = sbt_ws_recv_type(q, "authenticated", 5000);
  if (!m) fail_msg("?access_token= did not authenticate");
  free(m);
  sbt_ws_free(q);

  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"o\",\"filter\":{\"types\":{\"a\":\"b\"}}}"), "bad_message");
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"e\",\"filter\":{\"types\":[]}}"), "bad_message");
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"u\",\"filter\":"
                                   "{\"instance_id\":\"not-a-uuid-but-36-characters-long-xx\"}}"), "bad_message");
  expect_error(c, "{\"type\":\"unsubscribe\",\"id\":5}", -1, "bad_message");
  expect_error(c, "{\"type\":\"unsubscribe\"}", -1, "bad_message");
  sbt_ws_free(c);

  /* Upper-case uuids name the same instance and user. */
  char inst[37], up_inst[37], up_user[37], msg[256];
  fake_instance(ada_id, "upper", inst);
  for (int i = 0; i < 37; i++) up_inst[i] = (char)toupper((unsigned char)inst[i]);
  for (int i = 0; i < 37; i++) up_user[i] = (char)toupper((unsigned char)ada_id[i]);
  c = ws_connect(0, ada_token);
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"i\",\"filter\":{\"instance_id\":\"%s\",\"user_id\":\"%s\"}}",
           up_inst, up_user);
  assert_string_equal(subscribe(c, msg), "");
  int64_t from = max_seq();
  insert_events("test.upper", ada_id, inst, 3);
  got_t g = {0};
  collect(c, &g, 3, 5000);
  assert_exactly(&g, from, 0, ada_id);
  got_free(&g);

  /* A burst: every message answered, in order. */
  enum { PINGS = 200 };
  for (int i = 0; i < PINGS; i++) sbt_ws_send(c, "{\"type\":\"ping\"}", -1);
  int pongs = 0;
  while (pongs < PINGS && (m = sbt_ws_recv_type(c, "pong", 3000))) {
    pongs++;
    free(m);
  }
  assert_int_equal(pongs, PINGS);
  sbt_ws_free(c);
  c = ws_connect(0, op_token);
  for (int i = 0; i < 70; i++) {
    snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"s%d\"}", i);
    sbt_ws_send(c, msg, -1);
  }
  int subscribed = 0, refused = 0;
  while (subscribed + refused < 70 && (m = sbt_ws_recv(c, 3000))) {
    if (strstr(m, "\"subscribed\"")) subscribed++;
    else if (strstr(m, "too_many_subscriptions")) refused++;
    free(m);
  }
  assert_int_equal(subscribed, 64);
  assert_int_equal(refused, 6);
  sbt_ws_free(c);
}

/* A client that moves to an engine that has not yet read the events it saw elsewhere
 * gets none of them again. Engine 1 reads at most once every 3 s here, so it lags. */
static void test_resume_on_lagging_engine(void **state) {
  (void)state;
  setenv("SOLOBASE_EVENTS_COALESCE_US", "3000000", 1);
  start_engine(1);
  unsetenv("SOLOBASE_EVENTS_COALESCE_US");
  sbt_ws_t *lag = ws_connect(1, op_token); /* a read now: the next one is 3 s away */
  assert_string_equal(subscribe(lag, "{\"type\":\"subscribe\",\"id\":\"l\",\"filter\":{\"types\":[\"test.*\"]}}"), "");
  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":{\"types\":[\"test.*\"]}}"), "");
  /* The first event after a quiet spell is read at once; the next 3 s later. */
  insert_events("test.prime", NULL, NULL, 1);
  got_t g = {0};
  collect(lag, &g, 1, 3000);
  assert_int_equal(g.n, 1);
  got_free(&g);
  collect(c, &g, 1, 3000);
  got_free(&g);
  int64_t from = max_seq();
  insert_events("test.first", NULL, NULL, 5);
  collect(c, &g, 5, 3000);
  assert_exactly(&g, from, 0, NULL);
  int64_t seen = g.ids[4];
  got_free(&g);
  sbt_ws_free(c);
  /* Moves to engine 1 at once, with the last id it saw. */
  c = ws_connect(1, op_token);
  char msg[160];
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":{\"types\":[\"test.*\"]},\"last_id\":%lld}",
           (long long)seen);
  assert_string_equal(subscribe(c, msg), "");
  insert_events("test.second", NULL, NULL, 5);
  while (collect_one(c, &g, 5000) && g.n < 5) {
  }
  assert_exactly(&g, seen, 0, NULL); /* the 5 after it, none of the 5 before */
  got_free(&g);
  sbt_ws_free(c);
  sbt_ws_free(lag);
  stop_engine(1, SIGTERM);
}

/* A user suspended while its token is connected: its websockets close (4001) within
 * a second or two and its HTTP requests are refused at once, cached check or not. */
static void test_user_disabled(void **state) {
  (void)state;
  sbt_ws_t *c = ws_connect(0, ada_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  assert_int_equal(http(0, "GET", "/v1/instances", ada_token, NULL), 200); /* cached now */
  const char *p[] = {ada_id};
  uint64_t t0 = sb_now_ns();
  PQclear(sbtest_query(db, "UPDATE users SET status = 'suspended' WHERE id = $1", 1, p));
  assert_int_equal(sbt_ws_wait_closed(c, 5000), 4001);
  double took = (double)(sb_now_ns() - t0) / 1e9;
  if (took > 3) fail_msg("closed %.1f s after the user was suspended", took);
  ASSERT_HTTP(401, "unauthorized", 0, "GET", "/v1/instances", ada_token, NULL);
  sbt_ws_free(c);
  /* Another user's stream goes on. */
  c = ws_connect(0, bob_token);
  sbt_ws_free(c);
}

/* ---- graceful shutdown ---------------------------------------------------------------------- */

/* A notification that comes in while the listener is reading arrives with libpq's
 * answer, not on the socket: it must still be acted on. Each round commits an event big
 * enough that reading it takes a while, then, during that read, a small one: the small
 * one must arrive right after that read, not at the listener's once-a-second read (as
 * it did). Missed, it arrives a second after the big read ends, so at least 980 ms after
 * its commit; caught, the rest of the big read and 5 ms later (a 4.8 MB read can take a
 * few hundred ms on a busy 2-core machine: 601 ms was seen with 9.6 MB while CI ran the
 * provisioning tests beside it). */
static void test_event_during_read(void **state) {
  (void)state;
  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":"
                                   "{\"types\":[\"test.after\"]}}"),
                      "");
  double worst_ms = 0;
  for (int round = 0; round < 3; round++) {
    usleep(1200000); /* quiet: the big event's notification is read at once */
    PQclear(sbtest_query(db,
                         "INSERT INTO instance_events (event_type, description, payload) "
                         "VALUES ('test.big', 'big', jsonb_build_object('blob', "
                         "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 150000) g)))",
                         0, NULL));
    usleep(20000); /* the listener is reading it now */
    uint64_t t0 = sb_now_ns();
    insert_events("test.after", NULL, NULL, 1);
    got_t g = {0};
    collect(c, &g, 1, 3000);
    double ms = (double)(sb_now_ns() - t0) / 1e6;
    assert_int_equal(g.n, 1);
    got_free(&g);
    if (ms > worst_ms) worst_ms = ms;
  }
  if (worst_ms > 800) fail_msg("an event committed during a read took %.0f ms to arrive", worst_ms);
  sbt_ws_free(c);
}

static long long event_seq_scans(void) {
  return scalar_ll("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'instance_events'", 0, NULL);
}

/* Live reads of a table that grew by `bulk` since the statistics were taken (or with
 * none, as here): 40 events one by one, each read by the listener; how many of those
 * reads scanned instance_events whole. */
static long long live_read_scans(sbt_ws_t *c, got_t *g, int bulk) {
  int start = g->n;
  insert_events("test.bulk", NULL, NULL, bulk);
  collect(c, g, start + bulk, 10000);
  assert_int_equal(g->n, start + bulk);
  usleep(1500000); /* backends report their counts at most once a second */
  long long before = event_seq_scans();
  for (int i = 0; i < 40; i++) {
    insert_events("test.tick", NULL, NULL, 1);
    usleep(40000);
  }
  collect(c, g, start + bulk + 40, 5000);
  assert_int_equal(g->n, start + bulk + 40);
  usleep(1500000);
  return event_seq_scans() - before;
}

/* Reading the stream stays an index range scan however the table grew since the
 * engine's connections made their plans and whatever the statistics say: the live reads
 * (the listener) and the replay pages (API workers) are planned for the id they start
 * from. As generic plans made while the table was nearly empty they read the whole
 * table every time (seen in the fan-out benchmark: every 5 ms read scanned it, and the
 * stream slowed as it grew); so did `seq > $1 ... LIMIT 2000` planned for its value
 * while the table had no statistics yet and fewer than some 15,000 rows (the benchmark
 * again, on a new database: autovacuum had not analyzed it). Autovacuum is kept off
 * the table here, so the statistics stay what they were at the start (none). */
static void test_stream_reads_use_index(void **state) {
  (void)state;
  PQclear(sbtest_query(db, "ALTER TABLE instance_events SET (autovacuum_enabled = false)", 0, NULL));
  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":"
                                   "{\"types\":[\"test.*\"]}}"),
                      "");
  insert_events("test.tick", NULL, NULL, 1); /* the listener has read since the start */
  got_t g = {0};
  collect(c, &g, 1, 5000);
  int64_t first = max_seq();
  long long small = live_read_scans(c, &g, 5000);
  long long large = live_read_scans(c, &g, 15000);
  if (small > 3 || large > 3)
    fail_msg("live reads scanned instance_events whole %lld times at 5,000 rows, %lld at 20,000",
             small, large);
  int total = g.n - 1;
  long long before = event_seq_scans();
  got_free(&g);
  /* A replay from the database: the ring keeps the last 8,192, so 40 pages of 500. */
  sbt_ws_t *r = ws_connect(0, op_token);
  char msg[160];
  snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"s\",\"filter\":"
           "{\"types\":[\"test.*\"]},\"last_id\":%lld}", (long long)first);
  assert_string_equal(subscribe(r, msg), "");
  got_t h = {0};
  collect(r, &h, total, 10000);
  assert_int_equal(h.n, total);
  got_free(&h);
  usleep(1500000); /* backends report their counts at most once a second */
  insert_events("test.tick", NULL, NULL, 1);
  usleep(1500000);
  long long scans = event_seq_scans() - before;
  PQclear(sbtest_query(db, "ALTER TABLE instance_events RESET (autovacuum_enabled)", 0, NULL));
  if (scans > 3) fail_msg("replaying the stream scanned instance_events whole %lld times", scans);
  sbt_ws_free(r);
  sbt_ws_free(c);
}

/* Rows of instances read by scans since the statistics were last sent. */
static long long instance_rows_read(void) {
  return scalar_ll("SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                   "FROM pg_stat_user_tables WHERE relname = 'instances'", 0, NULL);
}

/* Listing instances reads what its filters select, not the table: the list's optional
 * filters (`$1 IS NULL OR status = $1`...) are planned for the values given. As a
 * generic plan (every prepared statement is one, core/db.c) no filter can use an index,
 * so a list by a rare status walked the whole created_at index (20,000 rows a call). */
static void test_instance_list_reads_what_it_lists(void **state) {
  (void)state;
  const char *p[] = {ada_id};
  PQclear(sbtest_query(db,
                       "INSERT INTO instances (user_id, name, subdomain, status, status_reason, "
                       "created_at) VALUES ($1, 'rare', 'rare-one', 'suspended', 'test', "
                       "now() - interval '1 day')",
                       1, p));
  PQclear(sbtest_query(db,
                       "INSERT INTO instances (user_id, name, subdomain, status, status_reason) "
                       "SELECT $1, 'bulk ' || g, 'bulk-' || g, 'failed', 'test' "
                       "FROM generate_series(1, 20000) g",
                       1, p));
  PQclear(sbtest_query(db, "ANALYZE instances", 0, NULL));
  usleep(1500000); /* the engine's backends have sent their counts */
  long long before = instance_rows_read();
  for (int i = 0; i < 10; i++) {
    assert_int_equal(http(0, "GET", "/v1/instances?status=suspended&limit=10", op_token, NULL), 200);
    assert_string_equal(field("instances.1.name"), "rare");
    assert_string_equal(field("instances.2.name"), "");
  }
  /* A backend sends its counts when it goes idle at least a second after it last did:
   * one more list after a pause, and the counts of all 11 are in. */
  usleep(1200000);
  assert_int_equal(http(0, "GET", "/v1/instances?status=suspended&limit=10", op_token, NULL), 200);
  usleep(500000);
  long long read = instance_rows_read() - before;
  if (read > 1000) fail_msg("11 lists of 1 instance read %lld rows of instances", read);
}

/* A transaction that queues a job and writes an event wakes the job workers at once:
 * its event sequencer sends NOTIFY sb_jobs, the one channel the coordinator listens on
 * (schema/007_jobs_notify.sql). Idle workers otherwise look once a second, so the claim
 * would come most of a second later (each trial starts soon after the last claim). */
static void test_job_wakes_workers(void **state) {
  (void)state;
  usleep(1500000); /* the engine's start-up jobs are done */
  double worst_ms = 0;
  for (int trial = 0; trial < 3; trial++) {
    uint64_t t0 = sb_now_ns();
    char *id = scalar("WITH j AS (INSERT INTO jobs (kind) VALUES ('jobs.cleanup') RETURNING id), "
                      "e AS (INSERT INTO instance_events (event_type, description) "
                      "VALUES ('test.wake', 'a job came with this event') RETURNING 1) "
                      "SELECT id FROM j, e",
                      0, NULL);
    const char *p[] = {id};
    double ms = 0;
    for (;;) {
      char *st = scalar("SELECT status FROM jobs WHERE id = $1", 1, p);
      bool claimed = strcmp(st, "queued") != 0;
      free(st);
      ms = (double)(sb_now_ns() - t0) / 1e6;
      if (claimed || ms > 3000) break;
      usleep(5000);
    }
    free(id);
    if (ms > worst_ms) worst_ms = ms;
    usleep(100000);
  }
  if (worst_ms > 300) fail_msg("a job queued with an event waited %.0f ms for a worker", worst_ms);
}

/* Instance reads that wait together are answered together (one pipeline per worker,
 * each request its own transaction, role and user): with the instances table locked,
 * both API workers block on their first take and the rest queue up, so the next takes
 * hold customers of two users, an operator and refused requests at once, with requests
 * that are taken alone (/v1/plans) between them. Each must get exactly its own
 * answer. */
static void test_batched_reads(void **state) {
  (void)state;
  char ada_inst[37], bob_inst[37], path_ada[96], path_bob[96];
  fake_instance(ada_id, "ada-batch", ada_inst);
  fake_instance(bob_id, "bob-batch", bob_inst);
  snprintf(path_ada, sizeof path_ada, "/v1/instances/%s", ada_inst);
  snprintf(path_bob, sizeof path_bob, "/v1/instances/%s", bob_inst);
  struct {
    const char *path, *token;
    long status;
    const char *user; /* the instance's owner in a 200, else NULL */
  } kinds[] = {
      {path_ada, ada_token, 200, ada_id},
      {path_ada, bob_token, 404, NULL},
      {path_bob, bob_token, 200, bob_id},
      {path_bob, ada_token, 404, NULL},
      {path_ada, op_token, 200, ada_id},
      {"/v1/instances/not-a-uuid", ada_token, 404, NULL},
      {"/v1/instances/00000000-0000-0000-0000-000000000000", bob_token, 404, NULL},
      {path_bob, NULL, 401, NULL},
      {"/v1/plans", bob_token, 200, NULL},
  };
  enum { N = 45 };
  int nk = (int)(sizeof kinds / sizeof kinds[0]);
  request_t r[N];
  pthread_t t[N];
  PQclear(sbtest_query(db, "BEGIN", 0, NULL));
  PQclear(sbtest_query(db, "LOCK TABLE instances IN ACCESS EXCLUSIVE MODE", 0, NULL));
  for (int i = 0; i < N; i++) {
    r[i] = (request_t){.path = kinds[i % nk].path, .token = kinds[i % nk].token};
    pthread_create(&t[i], NULL, run_request, &r[i]);
  }
  long waiting = 0;
  for (int i = 0; i < 100 && waiting < 2; i++) {
    waiting = scalar_ll("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = "
                        "'instances'::regclass", 0, NULL);
    usleep(20000);
  }
  usleep(300000); /* the rest arrive and queue */
  PQclear(sbtest_query(db, "COMMIT", 0, NULL));
  for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
  assert_int_equal(waiting, 2);
  for (int i = 0; i < N; i++) {
    int k = i % nk;
    if (r[i].status != kinds[k].status)
      fail_msg("%s as %d: expected %ld, got %ld: %.200s", kinds[k].path, k, kinds[k].status,
               r[i].status, r[i].body);
    lua_settop(J, 0);
    sb_error_t err;
    if (sb_lua_json_decode(J, r[i].body, strlen(r[i].body), &err) != 0)
      fail_msg("not JSON: %.200s", r[i].body);
    if (kinds[k].user) {
      assert_string_equal(field("instance.user_id"), kinds[k].user);
      assert_string_equal(field("instance.id"), kinds[k].path == path_ada ? ada_inst : bob_inst);
    } else if (kinds[k].status == 200) {
      assert_string_equal(field("plans.1.code"), "hobby");
    } else {
      assert_string_equal(field("error.code"), kinds[k].status == 401 ? "unauthorized" : "not_found");
    }
    free(r[i].body);
  }
}

static void test_shutdown(void **state) {
  (void)state;
  sbt_ws_t *c = ws_connect(0, op_token);
  assert_string_equal(subscribe(c, "{\"type\":\"subscribe\",\"id\":\"s\"}"), "");
  /* A request in flight at SIGTERM: its worker waits on a lock the test holds on plans
   * until after the signal. */
  PQclear(sbtest_query(db, "BEGIN", 0, NULL));
  PQclear(sbtest_query(db, "LOCK TABLE plans IN ACCESS EXCLUSIVE MODE", 0, NULL));
  request_t r = {.path = "/v1/plans", .token = op_token};
  pthread_t t;
  pthread_create(&t, NULL, run_request, &r);
  for (int i = 0; i < 100; i++) {
    if (scalar_ll("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'plans'::regclass",
                  0, NULL) > 0)
      break;
    usleep(50000);
  }
  kill(engines[0], SIGTERM);
  int closed = sbt_ws_wait_closed(c, 10000);
  /* New requests are refused meanwhile, in the API's error document. */
  char refused[2][64];
  const char *paths[] = {"/healthz", "/"};
  for (int i = 0; i < 2; i++) {
    long st = http(0, "GET", paths[i], NULL, NULL);
    snprintf(refused[i], sizeof refused[i], "%ld %s", st, field("error.code"));
  }
  /* Released before any assertion, so that a failure does not leave a worker waiting. */
  PQclear(sbtest_query(db, "COMMIT", 0, NULL));
  pthread_join(t, NULL);
  assert_int_equal(closed, 1001);
  assert_string_equal(refused[0], "503 shutting_down");
  assert_string_equal(refused[1], "503 shutting_down");
  /* The request in flight still gets its whole answer. */
  if (r.status != 200) fail_msg("the request in flight got %ld: %.200s", r.status, r.body);
  lua_settop(J, 0);
  sb_error_t err;
  if (sb_lua_json_decode(J, r.body, strlen(r.body), &err) != 0) fail_msg("not JSON: %.200s", r.body);
  assert_string_equal(field("plans.1.code"), "hobby");
  free(r.body);
  int status = stop_engine(0, 0);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  sbt_ws_free(c);
}

/* A request whose body is still coming at SIGTERM, and nothing else in flight: the
 * engine waits for the body (it used to exit at once, the client got nothing) and
 * answers it 503 shutting_down, then exits. */
static void test_shutdown_mid_body(void **state) {
  (void)state;
  const char *body = "{\"plan\":\"starter\",\"name\":\"late\",\"subdomain\":\"late-body\"}";
  char head[512];
  int hn = snprintf(head, sizeof head,
                    "POST /v1/instances HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%.10s",
                    op_token, strlen(body), body);
  int fd = tcp_connect(ports[0]);
  assert_int_equal(send(fd, head, (size_t)hn, 0), hn);
  usleep(200000); /* (raw_exchange sends all at once; this one sends in two parts) */
  kill(engines[0], SIGTERM);
  usleep(300000);
  assert_int_equal(send(fd, body + 10, strlen(body) - 10, 0), (ssize_t)(strlen(body) - 10));
  char late[2048];
  size_t got = 0;
  ssize_t rn;
  while (got < sizeof late - 1 && (rn = recv(fd, late + got, sizeof late - 1 - got, 0)) > 0) got += (size_t)rn;
  late[got] = '\0';
  close(fd);
  if (strncmp(late, "HTTP/1.1 503", 12) != 0 || !strstr(late, "shutting_down"))
    fail_msg("a body finished after SIGTERM got: %.200s", late);
  int status = stop_engine(0, 0);
  assert_true(WIFEXITED(status));
  assert_int_equal(count_instances(), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_http_api, before, after),
      cmocka_unit_test_setup_teardown(test_customer_isolation, before, after),
      cmocka_unit_test_setup_teardown(test_create_race, before, after),
      cmocka_unit_test_setup_teardown(test_lifecycle_bodies, before, after),
      cmocka_unit_test_setup_teardown(test_text_fields, before, after),
      cmocka_unit_test_setup_teardown(test_query_and_types, before, after),
      cmocka_unit_test_setup_teardown(test_two_engines, before, after),
      cmocka_unit_test_setup_teardown(test_paced_fanout, before, after),
      cmocka_unit_test_setup_teardown(test_resume, before, after),
      cmocka_unit_test_setup_teardown(test_malformed, before, after),
      cmocka_unit_test_setup_teardown(test_slow_client, before, after),
      cmocka_unit_test_setup_teardown(test_idle_sessions_cost_nothing, before, after),
      cmocka_unit_test_setup_teardown(test_token_revoked, before, after),
      cmocka_unit_test_setup_teardown(test_auth_deadline, before, after),
      cmocka_unit_test_setup_teardown(test_http_framing, before, after),
      cmocka_unit_test_setup_teardown(test_ws_input, before, after),
      cmocka_unit_test_setup_teardown(test_resume_on_lagging_engine, before, after),
      cmocka_unit_test_setup_teardown(test_user_disabled, before, after),
      cmocka_unit_test_setup_teardown(test_event_during_read, before, after),
      cmocka_unit_test_setup_teardown(test_batched_reads, before, after),
      cmocka_unit_test_setup_teardown(test_job_wakes_workers, before, after),
      cmocka_unit_test_setup_teardown(test_stream_reads_use_index, before, after),
      cmocka_unit_test_setup_teardown(test_instance_list_reads_what_it_lists, before, after),
      cmocka_unit_test_setup_teardown(test_shutdown, before, after),
      cmocka_unit_test_setup_teardown(test_shutdown_mid_body, before, after),
  };
  /* TEST_FILTER=test_resume (a glob) runs only the tests it names. */
  if (getenv("TEST_FILTER")) cmocka_set_test_filter(getenv("TEST_FILTER"));
  return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * test_fleet_local.c: the local fleet driver (core/fleet_local.c) against real
 * PostgreSQL 15 clusters and a real PgBouncer: a shared server behind PgBouncer and a
 * dedicated one, tenants created, isolated from each other, suspended, resumed, dumped
 * and dropped, the server stopped and brought back on other ports, and everything
 * destroyed again. Every step is also repeated, since the core retries after a crash.
 *
 * The tests run in order and share the two servers; the group teardown destroys them
 * even when a test failed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "config.h"
#include "fleet.h"
#include "mgmtdb.h"
#include "sbtest.h"
#include "util.h"

static sb_fleet_driver_t *drv;
static char *base_dir;
static sb_server_t shared, dedicated;

/* Tenant A and B on the shared server, D on the dedicated one. A's first password has
 * characters a URL must encode. */
#define DB_A "tenant_a_db"
#define ROLE_A "tenant_a"
#define DB_B "tenant_b_db"
#define ROLE_B "tenant_b"
#define DB_D "tenant_d_db"
#define ROLE_D "tenant_d"
static char pw_a_old[64], pw_a[64], pw_b[64], pw_d[64];

static void quiet_notices(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static PGconn *connect_as(int port, const char *dbname, const char *user,
                          const char *password) {
  char portstr[16];
  snprintf(portstr, sizeof portstr, "%d", port);
  const char *keys[] = {"host",     "port",            "dbname",           "user",
                        "password", "connect_timeout", "application_name", NULL};
  const char *vals[] = {"127.0.0.1", portstr, dbname, user, password, "10", "test_fleet_local",
                        NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 0);
  PQsetNoticeProcessor(c, quiet_notices, NULL);
  return c;
}

/* Runs sql on c; true when it succeeded. */
static bool run(PGconn *c, const char *sql) {
  PGresult *res = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(res);
  PQclear(res);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* First value of sql's first row; caller frees. Fails the test on error. */
static char *scalar(PGconn *c, const char *sql) {
  PGresult *res = PQexec(c, sql);
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1)
    fail_msg("%s: %s", sql, PQerrorMessage(c));
  char *v = sb_xstrdup(PQgetvalue(res, 0, 0));
  PQclear(res);
  return v;
}

/* A real login as user that runs SELECT current_user. */
static void assert_login(int port, const char *dbname, const char *user, const char *password) {
  PGconn *c = connect_as(port, dbname, user, password);
  if (PQstatus(c) != CONNECTION_OK)
    fail_msg("login as %s to %s on port %d: %s", user, dbname, port, PQerrorMessage(c));
  char *who = scalar(c, "SELECT current_user");
  assert_string_equal(who, user);
  free(who);
  PQfinish(c);
}

/* Asserts that user cannot log in to dbname (through PgBouncer a login may be accepted
 * and refused only at the first query) and returns why; caller frees. */
static char *login_error(int port, const char *dbname, const char *user, const char *password) {
  PGconn *c = connect_as(port, dbname, user, password);
  if (PQstatus(c) == CONNECTION_OK && run(c, "SELECT 1"))
    fail_msg("%s could log in to %s on port %d", user, dbname, port);
  char *why = sb_xstrdup(PQerrorMessage(c));
  PQfinish(c);
  return why;
}

static void assert_login_refused(int port, const char *dbname, const char *user,
                                 const char *password, const char *expect) {
  char *why = login_error(port, dbname, user, password);
  if (expect && !strstr(why, expect))
    fail_msg("login as %s to %s on port %d failed with `%s`, expected `%s`", user, dbname, port,
             why, expect);
  free(why);
}

static sb_server_health_t probe(const sb_server_t *srv) {
  sb_server_health_t h;
  sb_error_t err;
  assert_int_equal(drv->server_probe(drv, srv, &h, &err), 0);
  return h;
}

static char *server_root(const sb_server_t *srv) {
  char *servers = sb_path_join(base_dir, "servers");
  char *root = sb_path_join(servers, srv->name);
  free(servers);
  return root;
}

/* A listening socket on 127.0.0.1:port, to make a port busy. */
static int occupy(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int one = 1; /* the servers' old connections may linger in TIME_WAIT */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 1) != 0)
    fail_msg("cannot occupy port %d", port);
  return fd;
}

static int setup(void **state) {
  sb_error_t err;
  sbtest_init();
  base_dir = sb_cluster_base_dir(&err);
  if (!base_dir) {
    fprintf(stderr, "%s\n", err.msg);
    return -1;
  }
  drv = sb_fleet_local_new(base_dir, &err);
  if (!drv) {
    fprintf(stderr, "%s\n", err.msg);
    return -1;
  }
  char token[33];
  snprintf(shared.name, sizeof shared.name, "t-shared-%d", (int)getpid());
  snprintf(shared.admin_user, sizeof shared.admin_user, "sb_admin");
  sb_random_token(token, 32, &err);
  snprintf(shared.admin_password, sizeof shared.admin_password, "%s", token);
  shared.pooler = true;
  dedicated = shared;
  snprintf(dedicated.name, sizeof dedicated.name, "t-dedicated-%d", (int)getpid());
  dedicated.pooler = false;
  sb_random_token(token, 20, &err);
  snprintf(pw_a_old, sizeof pw_a_old, "p@ss:w/rd %%'\"?%s", token);
  sb_random_token(token, 24, &err);
  snprintf(pw_a, sizeof pw_a, "A-%s", token);
  sb_random_token(token, 24, &err);
  snprintf(pw_b, sizeof pw_b, "B-%s", token);
  sb_random_token(token, 24, &err);
  snprintf(pw_d, sizeof pw_d, "D-%s", token);
  return 0;
}

static int teardown(void **state) {
  sb_error_t err;
  if (drv) {
    if (drv->server_destroy(drv, &shared, &err) != 0) fprintf(stderr, "%s\n", err.msg);
    if (drv->server_destroy(drv, &dedicated, &err) != 0) fprintf(stderr, "%s\n", err.msg);
    drv->free(drv);
  }
  free(base_dir);
  return 0;
}

static void test_refuses_bad_names(void **state) {
  sb_error_t err;
  sb_server_t bad = shared;
  snprintf(bad.name, sizeof bad.name, "Bad_Name");
  assert_int_equal(drv->server_create(drv, &bad, &err), -1);
  assert_non_null(strstr(err.msg, "invalid server name"));
  snprintf(bad.name, sizeof bad.name, "-leading-dash");
  assert_int_equal(drv->server_create(drv, &bad, &err), -1);
  bad = shared;
  snprintf(bad.admin_user, sizeof bad.admin_user, "admin\"; --");
  assert_int_equal(drv->server_create(drv, &bad, &err), -1);
  assert_int_equal(drv->database_create(drv, &shared, "Bad-Db", ROLE_A, pw_a, &err), -1);
  assert_non_null(strstr(err.msg, "invalid database name"));
  assert_int_equal(drv->database_create(drv, &shared, DB_A, "x\"y", pw_a, &err), -1);
  assert_non_null(strstr(err.msg, "invalid role name"));
}

static void test_tenant_url(void **state) {
  sb_server_t s = {.host = "127.0.0.1", .port = 5433, .pooler_port = 6432, .pooler = true};
  char *url = sb_fleet_tenant_url(&s, "tdb", "trole", "a b:c@d/e%f");
  assert_string_equal(url, "postgresql://trole:a%20b%3Ac%40d%2Fe%25f@127.0.0.1:6432/tdb");
  free(url);
  s.pooler = false;
  s.pooler_port = 0;
  url = sb_fleet_tenant_url(&s, "tdb", "trole", "Plain123");
  assert_string_equal(url, "postgresql://trole:Plain123@127.0.0.1:5433/tdb");
  free(url);
}

static void test_create_shared_server_twice(void **state) {
  sb_error_t err;
  if (drv->server_create(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  assert_string_equal(shared.host, "127.0.0.1");
  assert_true(shared.port > 0);
  assert_true(shared.pooler_port > 0);
  assert_int_not_equal(shared.port, shared.pooler_port);
  int port = shared.port, pooler_port = shared.pooler_port;
  if (drv->server_create(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  assert_int_equal(shared.port, port);
  assert_int_equal(shared.pooler_port, pooler_port);

  /* PgBouncer runs with the spec's pooling settings. */
  PGconn *console = connect_as(shared.pooler_port, "pgbouncer", shared.admin_user,
                               shared.admin_password);
  if (PQstatus(console) != CONNECTION_OK) fail_msg("console: %s", PQerrorMessage(console));
  PGresult *res = PQexec(console, "SHOW CONFIG");
  assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
  int seen = 0;
  for (int i = 0; i < PQntuples(res); i++) {
    const char *key = PQgetvalue(res, i, 0), *value = PQgetvalue(res, i, 1);
    static const char *const want[][2] = {
        {"pool_mode", "transaction"},  {"default_pool_size", "20"},
        {"max_db_connections", "100"}, {"auth_type", "scram-sha-256"},
        {"listen_addr", "127.0.0.1"},  {"unix_socket_dir", ""}};
    for (size_t w = 0; w < SB_ARRAY_LEN(want); w++) {
      if (strcmp(key, want[w][0]) != 0) continue;
      if (strcmp(value, want[w][1]) != 0)
        fail_msg("PgBouncer %s = %s, want %s", key, value, want[w][1]);
      seen++;
    }
  }
  assert_int_equal(seen, 6);
  PQclear(res);
  PQfinish(console);
}

static void test_probe_empty_server(void **state) {
  sb_server_health_t h = probe(&shared);
  if (!h.ok) fail_msg("%s", h.error);
  assert_int_equal(h.databases, 0);
  assert_true(h.total_bytes > 0); /* postgres and the templates */
  assert_true(h.latency_ms > 0);
}

static void test_tenants_are_isolated(void **state) {
  sb_error_t err;
  if (drv->database_create(drv, &shared, DB_A, ROLE_A, pw_a_old, &err) != 0)
    fail_msg("%s", err.msg);
  if (drv->database_create(drv, &shared, DB_B, ROLE_B, pw_b, &err) != 0)
    fail_msg("%s", err.msg);
  assert_login(shared.port, DB_A, ROLE_A, pw_a_old);
  assert_login(shared.pooler_port, DB_A, ROLE_A, pw_a_old);

  /* Again with a new password: the old one stops working, directly and pooled. */
  if (drv->database_create(drv, &shared, DB_A, ROLE_A, pw_a, &err) != 0)
    fail_msg("%s", err.msg);
  assert_login(shared.port, DB_A, ROLE_A, pw_a);
  assert_login(shared.pooler_port, DB_A, ROLE_A, pw_a);
  assert_login_refused(shared.port, DB_A, ROLE_A, pw_a_old, "password authentication failed");
  assert_login_refused(shared.pooler_port, DB_A, ROLE_A, pw_a_old, "authentication failed");

  /* The URL the core hands out goes through PgBouncer; a few transactions there. */
  char *url = sb_fleet_tenant_url(&shared, DB_A, ROLE_A, pw_a);
  char port[16];
  snprintf(port, sizeof port, ":%d/", shared.pooler_port);
  assert_non_null(strstr(url, port));
  PGconn *c = PQconnectdb(url);
  free(url);
  if (PQstatus(c) != CONNECTION_OK) fail_msg("tenant URL: %s", PQerrorMessage(c));
  PQsetNoticeProcessor(c, quiet_notices, NULL);
  assert_true(run(c, "CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, note text)"));
  for (int i = 1; i <= 5; i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO items VALUES (%d, repeat('x', 1000))", i);
    assert_true(run(c, "BEGIN"));
    assert_true(run(c, sql));
    assert_true(run(c, "COMMIT"));
  }
  char *n = scalar(c, "SELECT count(*) FROM items");
  assert_string_equal(n, "5");
  free(n);
  PQfinish(c);

  /* A reaches neither B's database nor the maintenance ones, by either path. */
  assert_login_refused(shared.port, DB_B, ROLE_A, pw_a, "permission denied");
  assert_login_refused(shared.pooler_port, DB_B, ROLE_A, pw_a, "permission denied");
  assert_login_refused(shared.port, "postgres", ROLE_A, pw_a, "permission denied");
  assert_login_refused(shared.port, "template1", ROLE_A, pw_a, "permission denied");
  assert_login_refused(shared.pooler_port, "postgres", ROLE_A, pw_a, "permission denied");
  assert_login_refused(shared.port, DB_A, ROLE_B, pw_b, "permission denied");
  assert_login(shared.pooler_port, DB_B, ROLE_B, pw_b);

  /* The role is exactly what the spec's limits ask. */
  PGconn *admin = connect_as(shared.port, "postgres", shared.admin_user, shared.admin_password);
  assert_int_equal(PQstatus(admin), CONNECTION_OK);
  char *attrs = scalar(admin, "SELECT format('%s %s %s %s', rolconnlimit, rolsuper, "
                              "rolcreatedb, rolcanlogin) FROM pg_roles WHERE rolname = '" ROLE_A
                              "'");
  assert_string_equal(attrs, "100 f f t");
  free(attrs);
  PQfinish(admin);
}

static void test_probe_counts_tenants(void **state) {
  sb_server_health_t h = probe(&shared);
  if (!h.ok) fail_msg("%s", h.error);
  assert_int_equal(h.databases, 2);
  assert_true(h.total_bytes > 0);
}

static void test_suspend_and_resume(void **state) {
  sb_error_t err;
  PGconn *direct = connect_as(shared.port, DB_A, ROLE_A, pw_a);
  PGconn *pooled = connect_as(shared.pooler_port, DB_A, ROLE_A, pw_a);
  assert_int_equal(PQstatus(direct), CONNECTION_OK);
  assert_int_equal(PQstatus(pooled), CONNECTION_OK);
  assert_true(run(direct, "SELECT 1"));
  assert_true(run(pooled, "SELECT 1"));

  if (drv->role_set_login(drv, &shared, ROLE_A, false, &err) != 0) fail_msg("%s", err.msg);
  assert_false(run(direct, "SELECT 1"));
  assert_false(run(pooled, "SELECT 1"));
  PQfinish(direct);
  PQfinish(pooled);
  assert_login_refused(shared.port, DB_A, ROLE_A, pw_a, "not permitted to log in");
  assert_login_refused(shared.pooler_port, DB_A, ROLE_A, pw_a, "authentication failed");
  /* B is untouched. */
  assert_login(shared.pooler_port, DB_B, ROLE_B, pw_b);
  if (drv->role_set_login(drv, &shared, ROLE_A, false, &err) != 0) fail_msg("%s", err.msg);

  if (drv->role_set_login(drv, &shared, ROLE_A, true, &err) != 0) fail_msg("%s", err.msg);
  assert_login(shared.port, DB_A, ROLE_A, pw_a);
  assert_login(shared.pooler_port, DB_A, ROLE_A, pw_a);
  if (drv->role_set_login(drv, &shared, ROLE_A, true, &err) != 0) fail_msg("%s", err.msg);
  assert_int_equal(drv->role_set_login(drv, &shared, "no_such_role", false, &err), -1);
}

static void test_dump(void **state) {
  sb_error_t err;
  char *path = sb_xasprintf("%s/fleet-dump-%d.dump", base_dir, (int)getpid());
  int64_t size = 0;
  if (drv->database_dump(drv, &shared, DB_A, path, &size, &err) != 0) fail_msg("%s", err.msg);
  size_t len = 0;
  char *data = sb_read_file(path, &len, &err);
  assert_non_null(data);
  assert_true(len > 5);
  assert_int_equal((int64_t)len, size);
  assert_memory_equal(data, "PGDMP", 5);
  free(data);
  char *tmp = sb_xasprintf("%s.tmp", path);
  assert_false(sb_path_exists(tmp));
  free(tmp);
  /* No passfile is left behind. */
  char *root = server_root(&shared);
  char *pattern = sb_xasprintf("ls -A %s | grep -c '^\\.dump-'", root);
  FILE *p = popen(pattern, "r");
  char count[16] = "";
  assert_non_null(fgets(count, sizeof count, p));
  pclose(p);
  assert_int_equal(atoi(count), 0);
  free(pattern);
  free(root);
  assert_int_equal(drv->database_dump(drv, &shared, "no_such_db", path, &size, &err), -1);
  unlink(path);
  free(path);
}

static void test_stop_then_ensure_running_on_new_ports(void **state) {
  sb_error_t err;
  int old_port = shared.port, old_pooler = shared.pooler_port;
  if (drv->server_stop(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  if (drv->server_stop(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  assert_false(sb_tcp_port_in_use(old_port));
  assert_false(sb_tcp_port_in_use(old_pooler));
  sb_server_health_t h = probe(&shared);
  assert_false(h.ok);
  assert_true(h.error[0] != '\0');

  /* Someone else took both ports meanwhile. */
  int busy1 = occupy(old_port), busy2 = occupy(old_pooler);
  if (drv->server_ensure_running(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  close(busy1);
  close(busy2);
  assert_int_not_equal(shared.port, old_port);
  assert_int_not_equal(shared.pooler_port, old_pooler);
  h = probe(&shared);
  if (!h.ok) fail_msg("%s", h.error);
  assert_int_equal(h.databases, 2);
  assert_login(shared.port, DB_A, ROLE_A, pw_a);
  PGconn *c = connect_as(shared.pooler_port, DB_A, ROLE_A, pw_a);
  if (PQstatus(c) != CONNECTION_OK) fail_msg("%s", PQerrorMessage(c));
  char *n = scalar(c, "SELECT count(*) FROM items");
  assert_string_equal(n, "5");
  free(n);
  PQfinish(c);

  /* Running already: nothing changes. */
  int port = shared.port, pooler_port = shared.pooler_port;
  if (drv->server_ensure_running(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  assert_int_equal(shared.port, port);
  assert_int_equal(shared.pooler_port, pooler_port);

  sb_server_t never = shared;
  snprintf(never.name, sizeof never.name, "t-never-%d", (int)getpid());
  assert_int_equal(drv->server_ensure_running(drv, &never, &err), -1);
  assert_non_null(strstr(err.msg, "never created"));
}

static void test_ensure_running_restarts_a_dead_pgbouncer(void **state) {
  sb_error_t err;
  char *root = server_root(&shared);
  char *pidfile = sb_path_join(root, "pgbouncer/pgbouncer.pid");
  char *text = sb_read_file(pidfile, NULL, &err);
  assert_non_null(text);
  pid_t pid = (pid_t)atol(text);
  free(text);
  assert_true(pid > 0);
  assert_int_equal(kill(pid, SIGKILL), 0);
  for (int i = 0; i < 100 && kill(pid, 0) == 0; i++) usleep(20000);
  sb_server_health_t h = probe(&shared);
  assert_false(h.ok);
  assert_non_null(strstr(h.error, "PgBouncer"));

  /* The stale pid file stays behind; the pooler comes back on its port. */
  assert_true(sb_path_exists(pidfile));
  int pooler_port = shared.pooler_port;
  if (drv->server_ensure_running(drv, &shared, &err) != 0) fail_msg("%s", err.msg);
  assert_int_equal(shared.pooler_port, pooler_port);
  h = probe(&shared);
  if (!h.ok) fail_msg("%s", h.error);
  assert_login(shared.pooler_port, DB_A, ROLE_A, pw_a);
  free(pidfile);
  free(root);
}

static void test_drop_tenant(void **state) {
  sb_error_t err;
  if (drv->database_drop(drv, &shared, DB_A, ROLE_A, &err) != 0) fail_msg("%s", err.msg);
  if (drv->database_drop(drv, &shared, DB_A, ROLE_A, &err) != 0) fail_msg("%s", err.msg);
  assert_login_refused(shared.port, DB_A, ROLE_A, pw_a, "password authentication failed");
  assert_login_refused(shared.pooler_port, DB_A, ROLE_A, pw_a, "authentication failed");
  sb_server_health_t h = probe(&shared);
  if (!h.ok) fail_msg("%s", h.error);
  assert_int_equal(h.databases, 1);
  assert_login(shared.pooler_port, DB_B, ROLE_B, pw_b);

  /* A tenant PgBouncer never saw a connection for. */
  if (drv->database_create(drv, &shared, "tenant_c_db", "tenant_c", pw_b, &err) != 0)
    fail_msg("%s", err.msg);
  if (drv->role_set_login(drv, &shared, "tenant_c", false, &err) != 0) fail_msg("%s", err.msg);
  if (drv->database_drop(drv, &shared, "tenant_c_db", "tenant_c", &err) != 0)
    fail_msg("%s", err.msg);
  assert_int_equal(probe(&shared).databases, 1);
}

static void test_dedicated_server_has_no_pooler(void **state) {
  sb_error_t err;
  /* Settings are checked before anything is made, and values are quoted. */
  assert_int_equal(sb_config_set("fleet_server_settings", "max_connections=40;nonsense", &err), 0);
  assert_int_equal(drv->server_create(drv, &dedicated, &err), -1);
  assert_non_null(strstr(err.msg, "`nonsense` is not name=value"));
  char *lock = sb_xasprintf("%s/servers/%s.lock", base_dir, dedicated.name);
  assert_false(sb_path_exists(lock));
  free(lock);
  assert_int_equal(sb_config_set("fleet_server_settings",
                                 " max_connections = 40 ; cluster_name=it's a \\ test;", &err),
                   0);
  /* An earlier attempt died during initdb: its leftovers do not stop a new one. */
  char *root = server_root(&dedicated);
  char *data = sb_path_join(root, "data");
  assert_int_equal(sb_mkdir_p(data, 0700, &err), 0);
  char *junk = sb_path_join(data, "PG_VERSION");
  assert_int_equal(sb_write_file_atomic(junk, "15\n", 3, 0600, &err), 0);
  free(junk);
  free(data);
  if (drv->server_create(drv, &dedicated, &err) != 0) fail_msg("%s", err.msg);
  assert_true(dedicated.port > 0);
  assert_int_equal(dedicated.pooler_port, 0);
  if (drv->database_create(drv, &dedicated, DB_D, ROLE_D, pw_d, &err) != 0)
    fail_msg("%s", err.msg);
  if (drv->database_create(drv, &dedicated, DB_D, ROLE_D, pw_d, &err) != 0)
    fail_msg("%s", err.msg);
  char *url = sb_fleet_tenant_url(&dedicated, DB_D, ROLE_D, pw_d);
  PGconn *c = PQconnectdb(url);
  free(url);
  if (PQstatus(c) != CONNECTION_OK) fail_msg("%s", PQerrorMessage(c));
  assert_int_equal(PQport(c) ? atoi(PQport(c)) : 0, dedicated.port);
  PQfinish(c);
  assert_login(dedicated.port, DB_D, ROLE_D, pw_d);
  PGconn *admin = connect_as(dedicated.port, "postgres", dedicated.admin_user,
                             dedicated.admin_password);
  assert_int_equal(PQstatus(admin), CONNECTION_OK);
  char *v = scalar(admin, "SHOW max_connections");
  assert_string_equal(v, "40");
  free(v);
  v = scalar(admin, "SHOW cluster_name");
  assert_string_equal(v, "it's a \\ test");
  free(v);
  PQfinish(admin);
  char *bouncer = sb_path_join(root, "pgbouncer");
  assert_false(sb_path_exists(bouncer));
  free(bouncer);
  free(root);
  sb_server_health_t h = probe(&dedicated);
  if (!h.ok) fail_msg("%s", h.error);
  assert_int_equal(h.databases, 1);
}

/* Every password used, for the scan below. */
static const char *secrets[6];
static const char *leaked;

static int scan_file(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)ftw;
  if (flag != FTW_F || !S_ISREG(sb->st_mode)) return 0;
  size_t len = 0;
  char *data = sb_read_file(path, &len, NULL);
  if (!data) return 0;
  for (size_t i = 0; i < SB_ARRAY_LEN(secrets) && secrets[i]; i++)
    if (memmem(data, len, secrets[i], strlen(secrets[i]))) leaked = path;
  free(data);
  return leaked ? 1 : 0;
}

static void test_no_password_on_disk(void **state) {
  secrets[0] = pw_a_old;
  secrets[1] = pw_a;
  secrets[2] = pw_b;
  secrets[3] = pw_d;
  secrets[4] = shared.admin_password;
  const sb_server_t *servers[] = {&shared, &dedicated};
  for (size_t i = 0; i < SB_ARRAY_LEN(servers); i++) {
    char *root = server_root(servers[i]);
    leaked = NULL;
    nftw(root, scan_file, 16, FTW_PHYS);
    if (leaked) fail_msg("a password is in %s", leaked);
    free(root);
  }
  /* The logs exist and were scanned. */
  char *root = server_root(&shared);
  char *log = sb_path_join(root, "pgbouncer/pgbouncer.log");
  char *text = sb_read_file(log, NULL, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text, "login attempt"));
  free(text);
  free(log);

  /* The auth file holds verifiers only, readable by the server's user alone. */
  char *userlist = sb_path_join(root, "pgbouncer/userlist.txt");
  text = sb_read_file(userlist, NULL, NULL);
  assert_non_null(text);
  assert_non_null(strstr(text, "\"" ROLE_B "\" \"SCRAM-SHA-256$"));
  assert_null(strstr(text, ROLE_A));
  free(text);
  struct stat st;
  assert_int_equal(stat(userlist, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
  if (geteuid() == 0) {
    struct passwd *pw = getpwnam("postgres");
    assert_non_null(pw);
    assert_int_equal(st.st_uid, pw->pw_uid);
  }
  free(userlist);
  free(root);
}

static void test_destroy_everything(void **state) {
  sb_error_t err;
  const sb_server_t *servers[] = {&shared, &dedicated};
  for (size_t i = 0; i < SB_ARRAY_LEN(servers); i++) {
    if (drv->server_destroy(drv, servers[i], &err) != 0) fail_msg("%s", err.msg);
    if (drv->server_destroy(drv, servers[i], &err) != 0) fail_msg("%s", err.msg);
    char *root = server_root(servers[i]);
    assert_false(sb_path_exists(root));
    free(root);
    assert_false(sb_tcp_port_in_use(servers[i]->port));
    sb_server_health_t h = probe(servers[i]);
    assert_false(h.ok);
    assert_true(h.error[0] != '\0');
  }
  assert_false(sb_tcp_port_in_use(shared.pooler_port));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refuses_bad_names),
      cmocka_unit_test(test_tenant_url),
      cmocka_unit_test(test_create_shared_server_twice),
      cmocka_unit_test(test_probe_empty_server),
      cmocka_unit_test(test_tenants_are_isolated),
      cmocka_unit_test(test_probe_counts_tenants),
      cmocka_unit_test(test_suspend_and_resume),
      cmocka_unit_test(test_dump),
      cmocka_unit_test(test_stop_then_ensure_running_on_new_ports),
      cmocka_unit_test(test_ensure_running_restarts_a_dead_pgbouncer),
      cmocka_unit_test(test_drop_tenant),
      cmocka_unit_test(test_dedicated_server_has_no_pooler),
      cmocka_unit_test(test_no_password_on_disk),
      cmocka_unit_test(test_destroy_everything),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

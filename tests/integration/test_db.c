/*
 * test_db.c: the pipelines of core/db.c on a real PostgreSQL.
 *
 * sb_db_pipeline sends statements as one transaction (all or nothing, under a
 * savepoint inside a caller's transaction); sb_db_pipeline_groups sends independent
 * transactions together, which the HTTP API relies on to answer many readers, each as
 * its own role and user, in one round trip: a failing group must leave the others
 * alone, and what one group set for its transaction must not reach the next.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sbtest.h"
#include "util.h"

static sb_db_t *db;
static char *dbname;

static int setup(void **state) {
  (void)state;
  sbtest_init();
  db = sbtest_db_create("test_db", true, &dbname);
  PQclear(sbtest_query(db, "CREATE TABLE t (k int PRIMARY KEY)", 0, NULL));
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
  PQclear(sbtest_query(db, "TRUNCATE t", 0, NULL));
  return 0;
}

static long long count_t(void) {
  char *v = sbtest_scalar(db, "SELECT count(*) FROM t", 0, NULL);
  long long n = atoll(v);
  free(v);
  return n;
}

static const char insert_sql[] = "INSERT INTO t VALUES ($1::int)";
static const char setting_sql[] = "SELECT set_config('sb.user_id', $1, true)";
static const char read_setting_sql[] = "SELECT coalesce(current_setting('sb.user_id', true), '')";

static void test_pipeline_is_one_transaction(void **state) {
  (void)state;
  sb_error_t err;
  const char *one[] = {"1"}, *two[] = {"2"};
  sb_db_stmt_t ok[2] = {{insert_sql, 1, one, true, NULL}, {insert_sql, 1, two, true, NULL}};
  assert_int_equal(sb_db_pipeline(db, ok, 2, &err), 0);
  PQclear(ok[0].result);
  PQclear(ok[1].result);
  assert_int_equal(count_t(), 2);

  /* The second statement fails (duplicate key): the first is undone too. */
  const char *three[] = {"3"};
  sb_db_stmt_t bad[2] = {{insert_sql, 1, three, true, NULL}, {insert_sql, 1, one, true, NULL}};
  assert_int_equal(sb_db_pipeline(db, bad, 2, &err), -1);
  assert_string_equal(err.sqlstate, "23505");
  assert_null(bad[0].result);
  assert_null(bad[1].result);
  assert_int_equal(count_t(), 2);

  /* Inside a transaction, a failed pipeline undoes only itself. */
  assert_int_equal(sb_db_begin(db, &err), 0);
  const char *four[] = {"4"};
  assert_int_equal(sb_db_exec_params(db, insert_sql, 1, four, &err), 0);
  assert_int_equal(sb_db_pipeline(db, bad, 2, &err), -1);
  assert_int_equal(sb_db_commit(db, &err), 0);
  assert_int_equal(count_t(), 3);
}

static void test_groups_are_independent(void **state) {
  (void)state;
  const char *one[] = {"1"}, *two[] = {"2"}, *three[] = {"3"}, *ada[] = {"ada"};
  /* group 0: sets sb.user_id for its own transaction and inserts 1;
   * group 1: inserts 2, then 1 again (fails), so 2 must not stay either;
   * group 2: reads sb.user_id (must be empty: group 0's setting ended with it), inserts 3. */
  sb_db_stmt_t g0[2] = {{setting_sql, 1, ada, true, NULL}, {insert_sql, 1, one, true, NULL}};
  sb_db_stmt_t g1[2] = {{insert_sql, 1, two, true, NULL}, {insert_sql, 1, one, true, NULL}};
  sb_db_stmt_t g2[2] = {{read_setting_sql, 0, NULL, true, NULL}, {insert_sql, 1, three, true, NULL}};
  sb_db_group_t groups[3] = {{.stmts = g0, .n = 2}, {.stmts = g1, .n = 2}, {.stmts = g2, .n = 2}};
  assert_int_equal(sb_db_pipeline_groups(db, groups, 3), 0);
  assert_int_equal(groups[0].rc, 0);
  assert_int_equal(groups[1].rc, -1);
  assert_string_equal(groups[1].err.sqlstate, "23505");
  assert_null(g1[0].result);
  assert_null(g1[1].result);
  assert_int_equal(groups[2].rc, 0);
  assert_string_equal(PQgetvalue(g0[0].result, 0, 0), "ada");
  assert_string_equal(PQgetvalue(g2[0].result, 0, 0), "");
  for (int i = 0; i < 2; i++) {
    PQclear(g0[i].result);
    PQclear(g2[i].result);
  }
  char *keys = sbtest_scalar(db, "SELECT string_agg(k::text, ',' ORDER BY k) FROM t", 0, NULL);
  assert_string_equal(keys, "1,3");
  free(keys);

  /* The connection is usable afterwards, outside pipeline mode. */
  char *v = sbtest_scalar(db, "SELECT 41 + 1", 0, NULL);
  assert_string_equal(v, "42");
  free(v);
}

static void test_groups_refused_inside_a_transaction(void **state) {
  (void)state;
  sb_error_t err;
  const char *one[] = {"1"};
  sb_db_stmt_t g0[1] = {{insert_sql, 1, one, true, NULL}};
  sb_db_group_t groups[1] = {{.stmts = g0, .n = 1}};
  assert_int_equal(sb_db_begin(db, &err), 0);
  /* Independent transactions cannot run inside one: refused, nothing sent. */
  assert_int_equal(sb_db_pipeline_groups(db, groups, 1), 0);
  assert_int_equal(groups[0].rc, -1);
  assert_non_null(strstr(groups[0].err.msg, "inside a transaction"));
  assert_int_equal(sb_db_rollback(db, &err), 0);
  assert_int_equal(count_t(), 0);
}

static void test_groups_after_the_connection_broke(void **state) {
  (void)state;
  sb_error_t err;
  char *url = sbtest_url(dbname);
  sb_db_t *victim = sb_db_connect(url, NULL, "test_db victim", &err);
  free(url);
  assert_non_null(victim);
  char pid[32];
  snprintf(pid, sizeof pid, "%d", PQbackendPID(victim->conn));
  const char *p[] = {pid};
  PQclear(sbtest_query(db, "SELECT pg_terminate_backend($1::int)", 1, p));
  const char *one[] = {"1"}, *two[] = {"2"};
  sb_db_stmt_t g0[1] = {{insert_sql, 1, one, true, NULL}};
  sb_db_stmt_t g1[1] = {{insert_sql, 1, two, true, NULL}};
  sb_db_group_t groups[2] = {{.stmts = g0, .n = 1}, {.stmts = g1, .n = 1}};
  /* Every group fails, and the caller hears that the connection is gone. */
  assert_int_equal(sb_db_pipeline_groups(victim, groups, 2), -1);
  assert_int_equal(groups[0].rc, -1);
  assert_int_equal(groups[1].rc, -1);
  assert_null(g0[0].result);
  assert_null(g1[0].result);
  sb_db_free(victim);
  assert_int_equal(count_t(), 0);
}

/* Connections carry TCP keepalives and a user timeout (a vanished peer is noticed in
 * about a minute), unless the URL says otherwise. */
static void test_keepalives(void **state) {
  (void)state;
  sb_error_t err;
  char *url = sbtest_url(dbname);
  char *with = sb_xasprintf("%s%skeepalives_idle=7", url, strchr(url, '?') ? "&" : "?");
  const char *urls[] = {url, with};
  const char *idle[] = {"30", "7"};
  for (int i = 0; i < 2; i++) {
    sb_db_t *c = sb_db_connect(urls[i], NULL, "test_db keepalives", &err);
    assert_non_null(c);
    int found = 0;
    PQconninfoOption *opts = PQconninfo(c->conn);
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
      if (strcmp(o->keyword, "keepalives") == 0) found += o->val && strcmp(o->val, "1") == 0;
      if (strcmp(o->keyword, "keepalives_idle") == 0) found += o->val && strcmp(o->val, idle[i]) == 0;
      if (strcmp(o->keyword, "tcp_user_timeout") == 0) found += o->val && strcmp(o->val, "60000") == 0;
    }
    PQconninfoFree(opts);
    assert_int_equal(found, 3);
    sb_db_free(c);
  }
  free(with);
  free(url);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_pipeline_is_one_transaction, clean),
      cmocka_unit_test_setup(test_groups_are_independent, clean),
      cmocka_unit_test_setup(test_groups_refused_inside_a_transaction, clean),
      cmocka_unit_test_setup(test_groups_after_the_connection_broke, clean),
      cmocka_unit_test_setup(test_keepalives, clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

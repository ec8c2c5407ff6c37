/*
 * sbtest.c: per-test databases on the ctest cluster (see sbtest.h).
 */
#include "sbtest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "mgmtdb.h"
#include "util.h"

void sbtest_init(void) {
  sb_error_t err;
  if (!getenv("SOLOBASE_DATA_DIR")) {
    fprintf(stderr, "SOLOBASE_DATA_DIR is not set: run this test through ctest\n");
    exit(1);
  }
  if (sb_config_load(NULL, &err) != 0 || sb_config_finish(&err) != 0) {
    fprintf(stderr, "settings: %s\n", err.msg);
    exit(1);
  }
}

char *sbtest_url(const char *dbname) {
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) {
    fprintf(stderr, "test cluster: %s\n", err.msg);
    exit(1);
  }
  /* The template's URL with the last path segment replaced. */
  char *slash = strrchr(url, '/');
  *slash = '\0';
  char *out = sb_xasprintf("%s/%s", url, dbname);
  free(url);
  return out;
}

static sb_db_t *admin(void) {
  sb_error_t err;
  char *url = sbtest_url("postgres");
  sb_db_t *db = sb_db_connect(url, NULL, "sbtest", &err);
  free(url);
  if (!db) {
    fprintf(stderr, "test cluster: %s\n", err.msg);
    exit(1);
  }
  return db;
}

sb_db_t *sbtest_db_create(const char *prefix, bool migrated, char **name_out) {
  char *name = sb_xasprintf("%s_%d", prefix, (int)getpid());
  sbtest_db_drop(name);
  sb_db_t *a = admin();
  char *sql = sb_xasprintf("CREATE DATABASE %s TEMPLATE %s", name,
                           migrated ? sb_config()->database_name : "template0");
  sb_error_t err;
  if (sb_db_exec_params(a, sql, 0, NULL, &err) != 0) {
    fprintf(stderr, "%s: %s\n", sql, err.msg);
    exit(1);
  }
  free(sql);
  sb_db_free(a);
  char *url = sbtest_url(name);
  sb_db_t *db = sb_db_connect(url, NULL, prefix, &err);
  free(url);
  if (!db) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  *name_out = name;
  return db;
}

void sbtest_db_drop(const char *name) {
  sb_db_t *a = admin();
  char *sql = sb_xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
  sb_db_exec_params(a, sql, 0, NULL, NULL);
  free(sql);
  sb_db_free(a);
}

PGresult *sbtest_query(sb_db_t *db, const char *sql, int n, const char *const *params) {
  sb_error_t err;
  PGresult *res = sb_db_query(db, sql, n, params, &err);
  if (!res) fail_msg("%s\n  in: %s", err.msg, sql);
  return res;
}

const char *sbtest_error_state(sb_db_t *db, const char *sql, int n,
                               const char *const *params) {
  static sb_error_t err;
  PGresult *res = sb_db_query(db, sql, n, params, &err);
  if (res) {
    PQclear(res);
    return "";
  }
  return err.sqlstate;
}

char *sbtest_scalar(sb_db_t *db, const char *sql, int n, const char *const *params) {
  PGresult *res = sbtest_query(db, sql, n, params);
  if (PQntuples(res) < 1) fail_msg("no row from: %s", sql);
  char *v = sb_xstrdup(PQgetisnull(res, 0, 0) ? "(null)" : PQgetvalue(res, 0, 0));
  PQclear(res);
  return v;
}

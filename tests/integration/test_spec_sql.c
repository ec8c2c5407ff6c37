/*
 * test_spec_sql.c: every SQL statement of the specification, run unchanged against the
 * migrated and seeded schema on a real PostgreSQL, does what the specification says;
 * and the schema refuses bad rows.
 *
 * The statements are read from docs/spec.md (the user's specification, verbatim) at run
 * time, not copied here, and their $named parameters are bound by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sbtest.h"
#include "sqlparams.h"
#include "util.h"

enum {
  FIND_SHARED_RDS, INSERT_INSTANCE, UPDATE_CAPACITY, INSERT_EVENT, UPSERT_USAGE,
  CAPACITY_REPORT, QUOTA_REPORT, REVENUE_REPORT, INSERT_BACKUP, COMPLETE_BACKUP,
  ARCHIVE_LOGS, ARCHIVE_USAGE, SPEC_STATEMENTS
};

static char *spec[SPEC_STATEMENTS];
static sb_db_t *db;
static char *dbname;

/* Splits the ```sql blocks of the spec into statements (a ';' ends one). */
static void load_spec(void) {
  sb_error_t err;
  char *text = sb_read_file(SB_SOURCE_DIR "/docs/spec.md", NULL, &err);
  assert_non_null(text);
  int n = 0;
  for (char *p = strstr(text, "```sql\n"); p; p = strstr(p, "```sql\n")) {
    p += 7;
    char *end = strstr(p, "```");
    assert_non_null(end);
    *end = '\0';
    for (char *stmt = p; *stmt;) {
      char *semi = strchr(stmt, ';');
      if (!semi) break;
      *semi = '\0';
      assert_true(n < SPEC_STATEMENTS);
      spec[n++] = sb_xstrdup(stmt);
      stmt = semi + 1;
    }
    p = end + 3;
  }
  free(text);
  /* The spec has exactly these twelve statements; a changed copy must fail here. */
  assert_int_equal(n, SPEC_STATEMENTS);
  assert_non_null(strstr(spec[FIND_SHARED_RDS], "FROM shared_rds_instances"));
  assert_non_null(strstr(spec[UPSERT_USAGE], "ON CONFLICT (instance_id, date)"));
  assert_non_null(strstr(spec[ARCHIVE_USAGE], "INTERVAL '2 years'"));
}

/* Runs spec statement idx binding the NULL-terminated name/value pairs. */
static PGresult *run_spec(int idx, ...) {
  sb_sql_named_t p;
  sb_error_t err;
  assert_int_equal(sb_sql_named_parse(spec[idx], &p, &err), 0);
  const char *values[16] = {0};
  va_list ap;
  va_start(ap, idx);
  for (const char *name; (name = va_arg(ap, const char *));) {
    const char *value = va_arg(ap, const char *);
    int pos = sb_sql_named_index(&p, name);
    if (!pos) fail_msg("statement %d has no parameter $%s", idx, name);
    values[pos - 1] = value;
  }
  va_end(ap);
  for (int i = 0; i < p.n; i++)
    if (!values[i]) fail_msg("statement %d: $%s not bound", idx, p.names[i]);
  PGresult *res = sbtest_query(db, p.sql, p.n, values);
  sb_sql_named_free(&p);
  return res;
}

static char *new_user(const char *email) {
  const char *params[] = {email};
  return sbtest_scalar(db, "INSERT INTO users (email) VALUES ($1) RETURNING id", 1, params);
}

static char *new_server(const char *name, const char *status, int current, int max) {
  char cur[16], mx[16];
  snprintf(cur, sizeof cur, "%d", current);
  snprintf(mx, sizeof mx, "%d", max);
  const char *params[] = {name, status, cur, mx};
  return sbtest_scalar(db,
                       "INSERT INTO shared_rds_instances (rds_instance_id, status, "
                       "current_databases, max_databases) VALUES ($1, $2, $3, $4) RETURNING id",
                       4, params);
}

static char *new_instance(const char *user_id, const char *subdomain) {
  const char *params[] = {user_id, subdomain};
  return sbtest_scalar(db,
                       "INSERT INTO instances (user_id, name, subdomain) "
                       "VALUES ($1, $2, $2) RETURNING id",
                       2, params);
}

static void exec_sql(const char *sql) { PQclear(sbtest_query(db, sql, 0, NULL)); }

static int setup(void **state) {
  sbtest_init();
  load_spec();
  db = sbtest_db_create("test_spec_sql", true, &dbname);
  return 0;
}

static int teardown(void **state) {
  sb_db_free(db);
  sbtest_db_drop(dbname);
  free(dbname);
  for (int i = 0; i < SPEC_STATEMENTS; i++) free(spec[i]);
  return 0;
}

/* Each test starts from the seeded template's content. */
static int clean(void **state) {
  exec_sql("TRUNCATE users, shared_rds_instances, dedicated_rds_instances, instances, "
           "instance_usage, instance_logs, instance_events, transactions, invoices, backups, "
           "subscriptions CASCADE");
  return 0;
}

static void test_provisioning_flow(void **state) {
  char *user = new_user("ada@example.com");
  char *busy = new_server("shared-busy", "active", 3, 150);
  char *light = new_server("shared-light", "active", 1, 150);
  free(new_server("shared-degraded", "degraded", 0, 150));
  char *full = new_server("shared-full", "active", 150, 150);

  /* 1. The least-loaded active server with room: not the degraded one, not the full. */
  PGresult *res = run_spec(FIND_SHARED_RDS, NULL);
  assert_int_equal(PQntuples(res), 1);
  assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "id")), light);
  PQclear(res);

  /* 2. The instance row, as the spec writes it. */
  PQclear(run_spec(INSERT_INSTANCE, "user_id", user, "name", "My App", "subdomain", "my-app",
                   "shared_rds_id", light, "db_name", "instance_a1b2c3d4", "db_user",
                   "user_a1b2c3d4", NULL));
  const char *sub[] = {"my-app"};
  res = sbtest_query(db,
                     "SELECT id, status, database_tier, compute_tier, shared_rds_id, "
                     "database_name, storage_quota_gb FROM instances WHERE subdomain = $1",
                     1, sub);
  assert_int_equal(PQntuples(res), 1);
  char *instance = sb_xstrdup(PQgetvalue(res, 0, 0));
  assert_string_equal(PQgetvalue(res, 0, 1), "provisioning");
  assert_string_equal(PQgetvalue(res, 0, 2), "shared");
  assert_string_equal(PQgetvalue(res, 0, 3), "lambda");
  assert_string_equal(PQgetvalue(res, 0, 4), light);
  assert_string_equal(PQgetvalue(res, 0, 5), "instance_a1b2c3d4");
  PQclear(res);

  /* 3. Capacity taken. */
  PQclear(run_spec(UPDATE_CAPACITY, "shared_rds_id", light, NULL));
  const char *lp[] = {light};
  char *count = sbtest_scalar(db, "SELECT current_databases FROM shared_rds_instances "
                                  "WHERE id = $1", 1, lp);
  assert_string_equal(count, "2");
  free(count);

  /* A full server cannot be over-allocated, whoever runs step 3. */
  sb_sql_named_t p;
  sb_error_t err;
  assert_int_equal(sb_sql_named_parse(spec[UPDATE_CAPACITY], &p, &err), 0);
  const char *fp[] = {full};
  assert_string_equal(sbtest_error_state(db, p.sql, 1, fp), "23514");
  sb_sql_named_free(&p);

  /* 4. The audit event, which gets its stream position at commit. */
  PQclear(run_spec(INSERT_EVENT, "instance_id", instance, "user_id", user, NULL));
  const char *ip[] = {instance};
  res = sbtest_query(db,
                     "SELECT event_type, description, seq IS NOT NULL, user_id "
                     "FROM instance_events WHERE instance_id = $1", 1, ip);
  assert_int_equal(PQntuples(res), 1);
  assert_string_equal(PQgetvalue(res, 0, 0), "created");
  assert_string_equal(PQgetvalue(res, 0, 1), "Instance provisioning started");
  assert_string_equal(PQgetvalue(res, 0, 2), "t");
  assert_string_equal(PQgetvalue(res, 0, 3), user);
  PQclear(res);
  free(user);
  free(busy);
  free(light);
  free(full);
  free(instance);
}

static void test_usage_upsert_adds_requests_and_replaces_bytes(void **state) {
  char *user = new_user("bob@example.com");
  char *inst = new_instance(user, "bob-app");
  PQclear(run_spec(UPSERT_USAGE, "instance_id", inst, "api_requests", "100", "storage_bytes",
                   "1000", "database_bytes", "500", "compute_hours", "1.5", "total_cost", "12",
                   NULL));
  PQclear(run_spec(UPSERT_USAGE, "instance_id", inst, "api_requests", "50", "storage_bytes",
                   "2000", "database_bytes", "700", "compute_hours", "3", "total_cost", "99",
                   NULL));
  const char *ip[] = {inst};
  PGresult *res = sbtest_query(db,
                               "SELECT count(*) OVER (), api_requests, storage_bytes, "
                               "database_bytes, compute_hours, total_cost, date = CURRENT_DATE "
                               "FROM instance_usage WHERE instance_id = $1", 1, ip);
  assert_int_equal(PQntuples(res), 1);
  assert_string_equal(PQgetvalue(res, 0, 1), "150");  /* added */
  assert_string_equal(PQgetvalue(res, 0, 2), "2000"); /* replaced */
  assert_string_equal(PQgetvalue(res, 0, 3), "700");  /* replaced */
  assert_string_equal(PQgetvalue(res, 0, 4), "1.5000"); /* the spec's upsert keeps these */
  assert_string_equal(PQgetvalue(res, 0, 5), "12");
  assert_string_equal(PQgetvalue(res, 0, 6), "t");
  PQclear(res);
  free(user);
  free(inst);
}

static void test_capacity_report(void **state) {
  free(new_server("at-threshold", "active", 120, 150));
  free(new_server("empty", "active", 0, 150));
  free(new_server("third", "draining", 50, 150));
  PGresult *res = run_spec(CAPACITY_REPORT, NULL);
  assert_int_equal(PQntuples(res), 3);
  int pct = PQfnumber(res, "usage_percentage");
  assert_string_equal(PQgetvalue(res, 0, 0), "at-threshold");
  assert_string_equal(PQgetvalue(res, 0, pct), "80.00");
  assert_string_equal(PQgetvalue(res, 1, pct), "33.33");
  assert_string_equal(PQgetvalue(res, 2, pct), "0.00");
  assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "status")), "active");
  assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "storage_total_gb")), "100.000");
  PQclear(res);
}

static void set_usage(const char *inst, const char *bytes, const char *requests) {
  const char *params[] = {inst, bytes, requests};
  PQclear(sbtest_query(db,
                       "UPDATE instances SET storage_used_bytes = $2, api_requests_today = $3, "
                       "storage_quota_gb = 10, api_requests_quota_daily = 10000 WHERE id = $1",
                       3, params));
}

static void test_quota_report(void **state) {
  char *u1 = new_user("zed@example.com"), *u2 = new_user("amy@example.com");
  char *a = new_instance(u1, "storage-899"), *b = new_instance(u1, "storage-90");
  char *c = new_instance(u1, "storage-95"), *d = new_instance(u2, "api-9001");
  char *e = new_instance(u2, "api-9000");
  set_usage(a, "9652939997", "0");  /* 89.9 % of 10 GiB */
  set_usage(b, "9663676416", "0");  /* exactly 90 %: the spec's query wants more */
  set_usage(c, "10200547328", "0"); /* 95 % */
  set_usage(d, "0", "9001");        /* 90.01 % of 10,000 requests */
  set_usage(e, "0", "9000");        /* exactly 90 % */
  PGresult *res = run_spec(QUOTA_REPORT, NULL);
  assert_int_equal(PQntuples(res), 2);
  assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "subdomain")), "api-9001");
  assert_string_equal(PQgetvalue(res, 0, PQfnumber(res, "email")), "amy@example.com");
  assert_string_equal(PQgetvalue(res, 1, PQfnumber(res, "subdomain")), "storage-95");
  assert_true(strncmp(PQgetvalue(res, 1, PQfnumber(res, "storage_gb")), "9.5", 3) == 0);
  PQclear(res);
  free(u1), free(u2), free(a), free(b), free(c), free(d), free(e);
}

static void test_revenue_report(void **state) {
  char *u1 = new_user("one@example.com"), *u2 = new_user("two@example.com");
  const char *rows[][4] = {
      {u1, "succeeded", "2900", "2026-09-03"}, {u2, "succeeded", "9900", "2026-09-20"},
      {u1, "failed", "2900", "2026-09-21"},    {u1, "succeeded", "2900", "2026-10-03"},
      {u1, "succeeded", "100", "2026-10-04"},  {u2, "pending", "9900", "2026-10-05"},
  };
  for (size_t i = 0; i < SB_ARRAY_LEN(rows); i++)
    PQclear(sbtest_query(db,
                         "INSERT INTO transactions (user_id, status, amount, created_at) "
                         "VALUES ($1, $2, $3, $4::timestamptz)", 4, rows[i]));
  PGresult *res = run_spec(REVENUE_REPORT, NULL);
  assert_int_equal(PQntuples(res), 2);
  /* Newest month first; only succeeded payments count. */
  assert_true(strncmp(PQgetvalue(res, 0, 0), "2026-10-01", 10) == 0);
  assert_string_equal(PQgetvalue(res, 0, 1), "2");
  assert_string_equal(PQgetvalue(res, 0, 2), "30.0000000000000000");
  assert_string_equal(PQgetvalue(res, 0, 3), "1");
  assert_true(strncmp(PQgetvalue(res, 1, 0), "2026-09-01", 10) == 0);
  assert_string_equal(PQgetvalue(res, 1, 1), "2");
  assert_string_equal(PQgetvalue(res, 1, 2), "128.0000000000000000");
  assert_string_equal(PQgetvalue(res, 1, 3), "2");
  PQclear(res);
  free(u1), free(u2);
}

static void test_manual_backup(void **state) {
  char *user = new_user("cy@example.com");
  char *inst = new_instance(user, "backed-up");
  PQclear(run_spec(INSERT_BACKUP, "instance_id", inst, NULL));
  const char *ip[] = {inst};
  char *id = sbtest_scalar(db, "SELECT id FROM backups WHERE instance_id = $1 AND "
                               "backup_type = 'manual' AND status = 'in_progress'", 1, ip);
  PQclear(run_spec(COMPLETE_BACKUP, "backup_id", id, "size", "4096", "bucket", "sb-backups",
                   "key", "backed-up/manual.dump", NULL));
  const char *bp[] = {id};
  PGresult *res = sbtest_query(db,
                               "SELECT status, size_bytes, s3_bucket, s3_key, "
                               "expires_at - completed_at FROM backups WHERE id = $1", 1, bp);
  assert_string_equal(PQgetvalue(res, 0, 0), "completed");
  assert_string_equal(PQgetvalue(res, 0, 1), "4096");
  assert_string_equal(PQgetvalue(res, 0, 2), "sb-backups");
  assert_string_equal(PQgetvalue(res, 0, 3), "backed-up/manual.dump");
  assert_string_equal(PQgetvalue(res, 0, 4), "90 days");
  PQclear(res);
  free(user), free(inst), free(id);
}

static void test_archiving(void **state) {
  char *user = new_user("dee@example.com");
  char *inst = new_instance(user, "archived");
  const char *ip[] = {inst};
  PQclear(sbtest_query(db,
                       "INSERT INTO instance_logs (instance_id, message, created_at) VALUES "
                       "($1, 'old', now() - interval '91 days'), "
                       "($1, 'recent', now() - interval '89 days'), ($1, 'today', now())",
                       1, ip));
  PQclear(sbtest_query(db,
                       "INSERT INTO instance_usage (instance_id, date) VALUES "
                       "($1, CURRENT_DATE - interval '2 years' - interval '1 day'), "
                       "($1, CURRENT_DATE - interval '2 years'), ($1, CURRENT_DATE)",
                       1, ip));
  PGresult *res = run_spec(ARCHIVE_LOGS, NULL);
  assert_string_equal(PQcmdTuples(res), "1");
  PQclear(res);
  res = run_spec(ARCHIVE_USAGE, NULL);
  assert_string_equal(PQcmdTuples(res), "1");
  PQclear(res);
  char *left = sbtest_scalar(db, "SELECT string_agg(message, ',' ORDER BY created_at) "
                                 "FROM instance_logs", 0, NULL);
  assert_string_equal(left, "recent,today");
  free(left);
  left = sbtest_scalar(db, "SELECT count(*) FROM instance_usage", 0, NULL);
  assert_string_equal(left, "2");
  free(left);
  free(user), free(inst);
}

static void test_schema_rejects_bad_rows(void **state) {
  char *user = new_user("eve@example.com");
  char *inst = new_instance(user, "taken");
  const char *ip[] = {inst};
  /* Unknown status. */
  assert_string_equal(
      sbtest_error_state(db, "UPDATE instances SET status = 'bogus' WHERE id = $1", 1, ip),
      "23514");
  /* Negative quotas, on the instance and on a plan. */
  assert_string_equal(sbtest_error_state(db,
                                         "UPDATE instances SET storage_quota_gb = -1 "
                                         "WHERE id = $1", 1, ip),
                      "23514");
  assert_string_equal(
      sbtest_error_state(db, "UPDATE plans SET api_requests_quota_daily = -5", 0, NULL),
      "23514");
  /* Duplicate subdomain. */
  const char *dup[] = {user, "taken"};
  assert_string_equal(sbtest_error_state(db,
                                         "INSERT INTO instances (user_id, name, subdomain) "
                                         "VALUES ($1, $2, $2)", 2, dup),
                      "23505");
  /* Usage (and events) of an instance that does not exist. */
  assert_string_equal(sbtest_error_state(db,
                                         "INSERT INTO instance_usage (instance_id, date) VALUES "
                                         "(gen_random_uuid(), CURRENT_DATE)", 0, NULL),
                      "23503");
  assert_string_equal(sbtest_error_state(db,
                                         "INSERT INTO instance_events (instance_id, event_type) "
                                         "VALUES (gen_random_uuid(), 'created')", 0, NULL),
                      "23503");
  /* Malformed values. */
  const char *bad_sub[] = {user, "Not A Subdomain"};
  assert_string_equal(sbtest_error_state(db,
                                         "INSERT INTO instances (user_id, name, subdomain) "
                                         "VALUES ($1, $2, $2)", 2, bad_sub),
                      "23514");
  assert_string_equal(sbtest_error_state(db, "UPDATE plans SET database_tier = 'gold'", 0, NULL),
                      "23514");
  assert_string_equal(sbtest_error_state(db,
                                         "INSERT INTO users (email, password_hash) VALUES "
                                         "('f@example.com', 'plaintext')", 0, NULL),
                      "23514");
  /* Nothing changed. */
  char *n = sbtest_scalar(db, "SELECT count(*) FROM instances", 0, NULL);
  assert_string_equal(n, "1");
  free(n);
  free(user), free(inst);
}

static void test_every_foreign_key_leads_an_index(void **state) {
  char *fks = sbtest_scalar(db,
                            "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                            "AND connamespace = 'public'::regnamespace", 0, NULL);
  assert_true(atoi(fks) >= 18);
  free(fks);
  PGresult *res = sbtest_query(
      db,
      "SELECT c.conrelid::regclass || '.' || c.conname FROM pg_constraint c "
      "WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace "
      "AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid "
      "  AND i.indkey[0] = c.conkey[1])",
      0, NULL);
  for (int i = 0; i < PQntuples(res); i++)
    fprintf(stderr, "unindexed foreign key: %s\n", PQgetvalue(res, i, 0));
  assert_int_equal(PQntuples(res), 0);
  PQclear(res);
}

static void test_every_status_and_tier_is_constrained(void **state) {
  const char *cols =
      "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
      "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 "
      "AND NOT a.attisdropped AND a.attname ~ '(^|_)(status|tier|type|role|level|driver)$'";
  char *sql = sb_xasprintf("SELECT count(*) %s", cols);
  char *n = sbtest_scalar(db, sql, 0, NULL);
  assert_true(atoi(n) >= 20);
  free(n);
  free(sql);
  sql = sb_xasprintf("SELECT a.attrelid::regclass || '.' || a.attname %s AND NOT EXISTS "
                     "(SELECT 1 FROM pg_constraint k WHERE k.conrelid = a.attrelid "
                     " AND k.contype = 'c' AND a.attnum = ANY (k.conkey))",
                     cols);
  PGresult *res = sbtest_query(db, sql, 0, NULL);
  for (int i = 0; i < PQntuples(res); i++)
    fprintf(stderr, "unconstrained column: %s\n", PQgetvalue(res, i, 0));
  assert_int_equal(PQntuples(res), 0);
  PQclear(res);
  free(sql);
}

static void test_updated_at_kept_by_trigger(void **state) {
  char *user = new_user("kim@example.com");
  const char *up[] = {user};
  PQclear(sbtest_query(db, "UPDATE users SET created_at = now() - interval '1 day', "
                           "updated_at = now() - interval '1 day' WHERE id = $1", 1, up));
  PQclear(sbtest_query(db, "UPDATE users SET name = 'Kim' WHERE id = $1", 1, up));
  char *fresh = sbtest_scalar(db, "SELECT updated_at > now() - interval '1 minute' "
                                  "FROM users WHERE id = $1", 1, up);
  assert_string_equal(fresh, "t");
  free(fresh);
  free(user);
}

static void test_seeded_plans(void **state) {
  PGresult *res = sbtest_query(db,
                               "SELECT name, database_tier, backup_interval_hours, "
                               "backup_retention_days, pitr_window_minutes FROM plans "
                               "ORDER BY sort_order", 0, NULL);
  const char *want[][5] = {
      {"Hobby", "shared", "24", "7", "5"},       {"Starter", "shared", "24", "7", "5"},
      {"Professional", "shared", "24", "7", "5"}, {"Business", "dedicated", "6", "30", "1"},
      {"Enterprise", "dedicated", "6", "30", "1"},
  };
  assert_int_equal(PQntuples(res), 5);
  for (int r = 0; r < 5; r++)
    for (int c = 0; c < 5; c++) assert_string_equal(PQgetvalue(res, r, c), want[r][c]);
  PQclear(res);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_provisioning_flow, clean),
      cmocka_unit_test_setup(test_usage_upsert_adds_requests_and_replaces_bytes, clean),
      cmocka_unit_test_setup(test_capacity_report, clean),
      cmocka_unit_test_setup(test_quota_report, clean),
      cmocka_unit_test_setup(test_revenue_report, clean),
      cmocka_unit_test_setup(test_manual_backup, clean),
      cmocka_unit_test_setup(test_archiving, clean),
      cmocka_unit_test_setup(test_schema_rejects_bad_rows, clean),
      cmocka_unit_test(test_every_foreign_key_leads_an_index),
      cmocka_unit_test(test_every_status_and_tier_is_constrained),
      cmocka_unit_test_setup(test_updated_at_kept_by_trigger, clean),
      cmocka_unit_test(test_seeded_plans),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * sbtest.h: what C tests share: a database of their own on the test cluster.
 *
 * ctest starts one PostgreSQL cluster for the run (fixture `pg`, tests/support/pg-fixture)
 * under SOLOBASE_DATA_DIR, with a database `sbtest_template` that is migrated and
 * seeded. Each test binary creates its own database from that template (or an empty
 * one), so tests run in parallel without seeing each other's rows, and drops it at exit.
 */
#ifndef SBTEST_H
#define SBTEST_H

#include <stdbool.h>

#include "db.h"

/* Loads settings from the environment ctest sets; call first. */
void sbtest_init(void);
/* URL of dbname on the test cluster, superuser; caller frees. */
char *sbtest_url(const char *dbname);
/* Creates a fresh database named prefix_<pid> (from the template when migrated is
 * true, else empty) and connects to it. The name goes to *name_out (caller frees). */
sb_db_t *sbtest_db_create(const char *prefix, bool migrated, char **name_out);
void sbtest_db_drop(const char *name);

/* Runs sql with text params; fails the test on error and returns the result. */
PGresult *sbtest_query(sb_db_t *db, const char *sql, int n, const char *const *params);
/* Runs sql and returns the SQLSTATE of its error ("" when it succeeded). */
const char *sbtest_error_state(sb_db_t *db, const char *sql, int n, const char *const *params);
/* First column of the first row as a new string (caller frees). */
char *sbtest_scalar(sb_db_t *db, const char *sql, int n, const char *const *params);

#endif

/*
 * db.h: one connection to PostgreSQL and the parameterised queries run on it.
 *
 * Every statement with a value in it goes through sb_db_query() with $n parameters;
 * there is no string-building path for SQL. Errors come back as sb_error_t with the
 * server's SQLSTATE, primary message and detail, so callers can tell a constraint
 * violation ("23514") from a dead connection ("08006"). One sb_db_t is used by one
 * thread at a time.
 */
#ifndef SB_DB_H
#define SB_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "error.h"

#define SB_DB_PREPARED_MAX 32

typedef struct sb_db {
  PGconn *conn;
  int tx_depth; /* 0 outside a transaction; savepoints nest above 1 */
  /* Statements prepared on this connection, keyed by the address of their (static)
   * text: hot statements are parsed and planned once per connection. */
  const char *prepared[SB_DB_PREPARED_MAX];
  int nprepared;
} sb_db_t;

/* Connects with conninfo (URL or key=value); dbname, when non-NULL, replaces the
 * database named in conninfo. application_name shows in pg_stat_activity. */
sb_db_t *sb_db_connect(const char *conninfo, const char *dbname, const char *application_name,
                       sb_error_t *err);
void sb_db_free(sb_db_t *db);

/* Runs one statement with text parameters (a NULL entry is SQL NULL). Returns the
 * result, which the caller PQclear()s, or NULL with err set. */
PGresult *sb_db_query(sb_db_t *db, const char *sql, int nparams, const char *const *params,
                      sb_error_t *err);
/* Like sb_db_query for statements whose result is not needed. */
int sb_db_exec_params(sb_db_t *db, const char *sql, int nparams, const char *const *params,
                      sb_error_t *err);
/* Runs a script of one or more statements without parameters (migrations, seeds). On
 * error, err says which line of sql failed. */
int sb_db_exec_script(sb_db_t *db, const char *sql, sb_error_t *err);

/* Like sb_db_query for a statement run often: sql must be a string with static
 * storage (its address names the prepared statement). */
PGresult *sb_db_query_prepared(sb_db_t *db, const char *sql, int nparams,
                               const char *const *params, sb_error_t *err);

/* One statement of a pipeline. */
typedef struct sb_db_stmt {
  const char *sql;
  int nparams;
  const char *const *params;
  bool prepared;    /* sql has static storage: run it as a prepared statement */
  PGresult *result; /* filled by sb_db_pipeline: the caller PQclear()s */
} sb_db_stmt_t;

/* Sends all statements in one round trip (libpq pipeline mode) as one transaction: all
 * take effect or none does. Outside a transaction they form the implicit transaction of
 * one Sync; inside one they run under a savepoint. 0 on success (every result filled);
 * -1 with the first error in err, and nothing applied. */
int sb_db_pipeline(sb_db_t *db, sb_db_stmt_t *stmts, int n, sb_error_t *err);

/* Independent transactions sent together: each group's statements are one implicit
 * transaction of their own (their own Sync), so one group's failure leaves the others
 * alone, and every group costs one round trip between them all. Not inside a
 * transaction; at most SB_DB_GROUP_MAX statements in all. Each group gets rc (0 when
 * all its statements succeeded, its results filled) and err. Returns -1 when the
 * connection broke (every group not answered failed), else 0. */
#define SB_DB_GROUP_MAX 128
typedef struct sb_db_group {
  sb_db_stmt_t *stmts;
  int n;
  int rc;
  sb_error_t err;
} sb_db_group_t;
int sb_db_pipeline_groups(sb_db_t *db, sb_db_group_t *groups, int ngroups);

int sb_db_begin(sb_db_t *db, sb_error_t *err);
int sb_db_commit(sb_db_t *db, sb_error_t *err);
int sb_db_rollback(sb_db_t *db, sb_error_t *err);

/* Fills err from a failed result (res may be NULL when the connection broke). */
void sb_db_error_from_result(sb_error_t *err, PGconn *conn, const PGresult *res,
                             const char *sql);
/* The database named in conninfo ("" when none); caller frees. */
char *sb_db_conninfo_dbname(const char *conninfo, sb_error_t *err);
bool sb_db_is_connection_error(const sb_error_t *err);

#endif

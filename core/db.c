/*
 * db.c: PostgreSQL connections, parameterised statements, transactions (see db.h).
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

/* Server notices ("relation already exists, skipping") are debug output, not
 * something to print over a command's result. */
static void notice_to_log(void *arg, const char *message) {
  (void)arg;
  size_t len = strlen(message);
  while (len && message[len - 1] == '\n') len--;
  sb_debug("db", "%.*s", (int)len, message);
}

sb_db_t *sb_db_connect(const char *conninfo, const char *dbname, const char *application_name,
                       sb_error_t *err) {
  /* Later keywords override earlier ones, including what the expanded dbname (the URL)
   * sets. First defaults the URL may change: TCP keepalives and a user timeout, so a
   * connection whose peer vanished without a word (a network partition, a host gone)
   * fails within about a minute instead of the kernel's two hours and more, and the
   * engine reconnects (docs/architecture.md); they do nothing on a Unix socket. */
  const char *keys[12], *vals[12];
  int n = 0;
  keys[n] = "keepalives", vals[n++] = "1";
  keys[n] = "keepalives_idle", vals[n++] = "30";
  keys[n] = "keepalives_interval", vals[n++] = "10";
  keys[n] = "keepalives_count", vals[n++] = "3";
  keys[n] = "tcp_user_timeout", vals[n++] = "60000";
  keys[n] = "dbname", vals[n++] = conninfo ? conninfo : "";
  keys[n] = "application_name", vals[n++] = application_name ? application_name : "solobase";
  keys[n] = "connect_timeout", vals[n++] = "10";
  keys[n] = "client_encoding", vals[n++] = "UTF8";

  if (dbname) keys[n] = "dbname", vals[n++] = dbname;
  keys[n] = NULL, vals[n] = NULL;
  PGconn *conn = PQconnectdbParams(keys, vals, 1);
  if (!conn || PQstatus(conn) != CONNECTION_OK) {
    /* libpq's message names host and port but never the password. */
    sb_error_set(err, "cannot connect to the database: %s",
                 conn ? PQerrorMessage(conn) : "out of memory");
    if (err) memcpy(err->sqlstate, "08001", 6);
    if (conn) PQfinish(conn);
    return NULL;
  }
  PQsetNoticeProcessor(conn, notice_to_log, NULL);
  sb_db_t *db = sb_xcalloc(1, sizeof *db);
  db->conn = conn;
  return db;
}

void sb_db_free(sb_db_t *db) {
  if (!db) return;
  if (db->conn) PQfinish(db->conn);
  free(db);
}

/* 1-based line of sql holding the 1-based character position pos. */
static int line_of_position(const char *sql, long pos) {
  int line = 1;
  for (long i = 0; sql[i] && i < pos - 1; i++)
    if (sql[i] == '\n') line++;
  return line;
}

void sb_db_error_from_result(sb_error_t *err, PGconn *conn, const PGresult *res,
                             const char *sql) {
  if (!err) return;
  const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
  /* "Failing row contains (...)" repeats every value of the row, secrets and personal
   * data included: messages go to logs and API clients, so it is dropped. */
  if (detail && strncmp(detail, "Failing row contains", 20) == 0) detail = NULL;
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
  if (!primary) {
    const char *m = conn ? PQerrorMessage(conn) : "";
    primary = (m && *m) ? m : "the connection to the database was lost";
    if (!state) state = (conn && PQstatus(conn) == CONNECTION_OK) ? "XX000" : "08006";
  }
  char where[32] = "";
  if (pos && sql && strchr(sql, '\n'))
    snprintf(where, sizeof where, "line %d: ", line_of_position(sql, atol(pos)));
  sb_error_set(err, "%s%s%s%s", where, primary, detail ? " (" : "", detail ? detail : "");
  if (detail) {
    size_t len = strlen(err->msg);
    if (len + 1 < sizeof err->msg) strcat(err->msg, ")");
  }
  /* Trailing newlines from libpq are noise in a one-line message. */
  size_t len = strlen(err->msg);
  while (len && (err->msg[len - 1] == ' ' || err->msg[len - 1] == '\n')) err->msg[--len] = '\0';
  snprintf(err->sqlstate, sizeof err->sqlstate, "%s", state ? state : "XX000");
}

PGresult *sb_db_query(sb_db_t *db, const char *sql, int nparams, const char *const *params,
                      sb_error_t *err) {
  PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return res;
  sb_db_error_from_result(err, db->conn, res, sql);
  PQclear(res);
  return NULL;
}

int sb_db_exec_params(sb_db_t *db, const char *sql, int nparams, const char *const *params,
                      sb_error_t *err) {
  PGresult *res = sb_db_query(db, sql, nparams, params, err);
  if (!res) return -1;
  PQclear(res);
  return 0;
}

int sb_db_exec_script(sb_db_t *db, const char *sql, sb_error_t *err) {
  /* PQexec runs every statement of the string; the result is the last one's. */
  PGresult *res = PQexec(db->conn, sql);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY) {
    PQclear(res);
    return 0;
  }
  sb_db_error_from_result(err, db->conn, res, sql);
  PQclear(res);
  return -1;
}

/* The name of sql's prepared statement on this connection, preparing it on first use;
 * NULL with err on failure. */
static const char *prepare(sb_db_t *db, const char *sql, int nparams, sb_error_t *err,
                           char *name, size_t len) {
  for (int i = 0; i < db->nprepared; i++)
    if (db->prepared[i] == sql) {
      snprintf(name, len, "sb_%d", i);
      return name;
    }
  if (db->nprepared == SB_DB_PREPARED_MAX) return NULL; /* full: run it unprepared */
  if (db->nprepared == 0) {
    /* The engine prepares only statements that look rows up by key, for which the
     * generic plan is the right one. Left to choose, PostgreSQL sometimes keeps
     * re-planning every execution (custom plans), which for the provisioning statement
     * costs more CPU than running it (tests/bench/provision_bench.c). The setting
     * applies to unnamed statements too (PostgreSQL plans them generic as well), so a
     * read that must be planned for its values on such a connection sets
     * plan_cache_mode = force_custom_plan for its transaction (core/api.c). */
    PGresult *set = PQexec(db->conn, "SET plan_cache_mode = force_generic_plan");
    PQclear(set);
  }
  snprintf(name, len, "sb_%d", db->nprepared);
  PGresult *res = PQprepare(db->conn, name, sql, nparams, NULL);
  if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
    sb_db_error_from_result(err, db->conn, res, sql);
    PQclear(res);
    return NULL;
  }
  PQclear(res);
  db->prepared[db->nprepared++] = sql;
  return name;
}

PGresult *sb_db_query_prepared(sb_db_t *db, const char *sql, int nparams,
                               const char *const *params, sb_error_t *err) {
  char name[16];
  sb_error_clear(err);
  if (!prepare(db, sql, nparams, err, name, sizeof name)) {
    if (err && err->msg[0]) return NULL;
    return sb_db_query(db, sql, nparams, params, err);
  }
  PGresult *res = PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0);
  ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return res;
  sb_db_error_from_result(err, db->conn, res, sql);
  PQclear(res);
  return NULL;
}

/* Reads the results of `total` statements and the sync. Statement i (counting all
 * sent) is stmts[i - first] when first <= i < first + n. Returns 0 when all succeeded;
 * err gets the first failure. */
static int read_pipeline(sb_db_t *db, sb_db_stmt_t *stmts, int first, int n, int total,
                         sb_error_t *err) {
  int rc = 0;
  for (int i = 0; i < total; i++) {
    PGresult *res = PQgetResult(db->conn);
    if (!res) {
      if (rc == 0) sb_db_error_from_result(err, db->conn, NULL, NULL);
      return -1; /* the connection broke */
    }
    ExecStatusType st = PQresultStatus(res);
    bool mine = i >= first && i < first + n;
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
      if (mine) stmts[i - first].result = res;
      else PQclear(res);
    } else {
      if (rc == 0) sb_db_error_from_result(err, db->conn, res, mine ? stmts[i - first].sql : NULL);
      rc = -1;
      PQclear(res);
    }
    PQclear(PQgetResult(db->conn)); /* each statement's results end with a NULL */
  }
  PGresult *sync = PQgetResult(db->conn);
  if (!sync || PQresultStatus(sync) != PGRES_PIPELINE_SYNC) rc = -1;
  PQclear(sync);
  return rc;
}

/* Prepares stmts[i] (when asked to and there is room) before the pipeline starts, since
 * preparing is a round trip of its own, once per connection and statement; names[i] is
 * "" for a statement sent unprepared. false with err on a failed PREPARE. */
static bool prepare_all(sb_db_t *db, const sb_db_stmt_t *stmts, int n, char (*names)[16],
                        sb_error_t *err) {
  for (int i = 0; i < n; i++) {
    names[i][0] = '\0';
    err->msg[0] = '\0';
    if (stmts[i].prepared && !prepare(db, stmts[i].sql, stmts[i].nparams, err, names[i], 16) &&
        err->msg[0])
      return false;
  }
  return true;
}

static bool send_stmt(sb_db_t *db, const sb_db_stmt_t *st, const char *name) {
  return name[0] ? PQsendQueryPrepared(db->conn, name, st->nparams, st->params, NULL, NULL, 0)
                 : PQsendQueryParams(db->conn, st->sql, st->nparams, NULL, st->params, NULL,
                                     NULL, 0);
}

int sb_db_pipeline_groups(sb_db_t *db, sb_db_group_t *groups, int ngroups) {
  int total = 0;
  for (int g = 0; g < ngroups; g++) {
    groups[g].rc = -1;
    memset(&groups[g].err, 0, sizeof groups[g].err);
    for (int i = 0; i < groups[g].n; i++) groups[g].stmts[i].result = NULL;
    total += groups[g].n;
  }
  sb_error_t err;
  if (db->tx_depth > 0 || total > SB_DB_GROUP_MAX) {
    sb_error_set(&err, db->tx_depth > 0 ? "independent transactions inside a transaction"
                                        : "more than %d statements in one pipeline",
                 SB_DB_GROUP_MAX);
    goto fail_all;
  }
  char names[SB_DB_GROUP_MAX][16];
  for (int g = 0, k = 0; g < ngroups; k += groups[g].n, g++)
    if (!prepare_all(db, groups[g].stmts, groups[g].n, names + k, &err)) goto fail_all;
  if (!PQenterPipelineMode(db->conn)) {
    sb_error_set(&err, "cannot enter pipeline mode: %s", PQerrorMessage(db->conn));
    goto fail_all;
  }
  bool ok = true;
  for (int g = 0, k = 0; ok && g < ngroups; g++) {
    for (int i = 0; ok && i < groups[g].n; i++, k++) ok = send_stmt(db, &groups[g].stmts[i], names[k]);
    ok = ok && PQpipelineSync(db->conn);
  }
  if (!ok) {
    sb_error_set(&err, "sending to the database failed: %s", PQerrorMessage(db->conn));
    PQexitPipelineMode(db->conn);
    goto fail_all;
  }
  /* Each group's results and its Sync, in order; a failed group's later statements
   * come back aborted, and the next group starts afresh after the Sync. */
  int rc = 0;
  for (int g = 0; g < ngroups; g++) {
    sb_db_group_t *gr = &groups[g];
    gr->rc = read_pipeline(db, gr->stmts, 0, gr->n, gr->n, &gr->err);
    if (gr->rc != 0) {
      for (int i = 0; i < gr->n; i++) {
        PQclear(gr->stmts[i].result);
        gr->stmts[i].result = NULL;
      }
      if (PQstatus(db->conn) != CONNECTION_OK) rc = -1;
    }
    if (rc != 0) {
      /* The connection broke: every group not yet read fails with the same error. */
      for (int h = g + 1; h < ngroups; h++) {
        groups[h].rc = -1;
        groups[h].err = gr->err;
      }
      break;
    }
  }
  PQexitPipelineMode(db->conn);
  return rc;
fail_all:
  for (int g = 0; g < ngroups; g++) groups[g].err = err;
  return PQstatus(db->conn) == CONNECTION_OK ? 0 : -1;
}

int sb_db_pipeline(sb_db_t *db, sb_db_stmt_t *stmts, int n, sb_error_t *err) {
  bool nested = db->tx_depth > 0;
  for (int i = 0; i < n; i++) stmts[i].result = NULL;
  if (n > SB_DB_GROUP_MAX) {
    sb_error_set(err, "more than %d statements in one pipeline", SB_DB_GROUP_MAX);
    return -1;
  }
  char names[SB_DB_GROUP_MAX][16];
  if (!prepare_all(db, stmts, n, names, err)) return -1;
  if (!PQenterPipelineMode(db->conn)) {
    sb_error_set(err, "cannot enter pipeline mode: %s", PQerrorMessage(db->conn));
    return -1;
  }
  bool ok = true;
  if (nested)
    ok = PQsendQueryParams(db->conn, "SAVEPOINT sb_pipeline", 0, NULL, NULL, NULL, NULL, 0);
  for (int i = 0; ok && i < n; i++) ok = send_stmt(db, &stmts[i], names[i]);
  if (ok && nested)
    ok = PQsendQueryParams(db->conn, "RELEASE SAVEPOINT sb_pipeline", 0, NULL, NULL, NULL, NULL, 0);
  ok = ok && PQpipelineSync(db->conn);
  int rc;
  if (ok) {
    rc = read_pipeline(db, stmts, nested ? 1 : 0, n, n + (nested ? 2 : 0), err);
  } else {
    sb_error_set(err, "sending to the database failed: %s", PQerrorMessage(db->conn));
    rc = -1;
  }
  PQexitPipelineMode(db->conn);
  if (rc != 0) {
    for (int i = 0; i < n; i++) {
      PQclear(stmts[i].result);
      stmts[i].result = NULL;
    }
    if (nested && PQstatus(db->conn) == CONNECTION_OK) {
      /* Undo the pipeline only; the caller's transaction goes on. */
      PQclear(PQexec(db->conn, "ROLLBACK TO SAVEPOINT sb_pipeline"));
      PQclear(PQexec(db->conn, "RELEASE SAVEPOINT sb_pipeline"));
    }
  }
  return rc;
}

int sb_db_begin(sb_db_t *db, sb_error_t *err) {
  if (db->tx_depth > 0) {
    char sql[64];
    snprintf(sql, sizeof sql, "SAVEPOINT sb_%d", db->tx_depth);
    if (sb_db_exec_params(db, sql, 0, NULL, err) != 0) return -1;
  } else if (sb_db_exec_params(db, "BEGIN", 0, NULL, err) != 0) {
    return -1;
  }
  db->tx_depth++;
  return 0;
}

int sb_db_commit(sb_db_t *db, sb_error_t *err) {
  if (db->tx_depth <= 0) {
    sb_error_set(err, "commit without a transaction");
    return -1;
  }
  db->tx_depth--;
  if (db->tx_depth > 0) {
    char sql[64];
    snprintf(sql, sizeof sql, "RELEASE SAVEPOINT sb_%d", db->tx_depth);
    return sb_db_exec_params(db, sql, 0, NULL, err);
  }
  return sb_db_exec_params(db, "COMMIT", 0, NULL, err);
}

int sb_db_rollback(sb_db_t *db, sb_error_t *err) {
  if (db->tx_depth <= 0) {
    sb_error_set(err, "rollback without a transaction");
    return -1;
  }
  db->tx_depth--;
  if (db->tx_depth > 0) {
    char sql[64];
    snprintf(sql, sizeof sql, "ROLLBACK TO SAVEPOINT sb_%d", db->tx_depth);
    return sb_db_exec_params(db, sql, 0, NULL, err);
  }
  return sb_db_exec_params(db, "ROLLBACK", 0, NULL, err);
}

char *sb_db_conninfo_dbname(const char *conninfo, sb_error_t *err) {
  char *errmsg = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
  if (!opts) {
    sb_error_set(err, "invalid database URL: %s", errmsg ? errmsg : "out of memory");
    PQfreemem(errmsg);
    return NULL;
  }
  char *name = NULL;
  for (PQconninfoOption *o = opts; o->keyword; o++)
    if (strcmp(o->keyword, "dbname") == 0 && o->val) name = sb_xstrdup(o->val);
  PQconninfoFree(opts);
  return name ? name : sb_xstrdup("");
}

bool sb_db_is_connection_error(const sb_error_t *err) {
  return err && strncmp(err->sqlstate, "08", 2) == 0;
}

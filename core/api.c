/*
 * api.c: the HTTP API's routes (see api.h and docs/http-api.md).
 *
 * Layout: responses and errors; reading bodies and query strings; queries as the
 * caller (row-level security for customers); one function per route; the router.
 */
#include "api.h"

#include <ctype.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "luaconv.h"
#include "provision.h"
#include "util.h"

struct sb_api_worker {
  const sb_api_shared_t *shared;
  sb_db_t *db;
  sb_policy_engine_t *pe;
  lua_State *L; /* plain Lua with lua-cjson: request bodies and answers */
};

/* The instance as the API shows it: no secret, the plan by code. */
#define INSTANCE_JSON                                                                          \
  "json_build_object('id', i.id, 'user_id', i.user_id, 'name', i.name, 'subdomain', "         \
  "i.subdomain, 'status', i.status, 'status_reason', i.status_reason, 'plan', "               \
  "(SELECT code FROM plans WHERE id = i.plan_id), 'database_tier', i.database_tier, "         \
  "'compute_tier', i.compute_tier, 'region', i.region, 'shared_rds_id', i.shared_rds_id, "    \
  "'database_name', i.database_name, 'database_host', i.database_host, 'database_port', "     \
  "i.database_port, 'storage_used_bytes', i.storage_used_bytes, 'storage_quota_gb', "         \
  "i.storage_quota_gb, 'api_requests_today', i.api_requests_today, "                          \
  "'api_requests_quota_daily', i.api_requests_quota_daily, 'quota_status', i.quota_status, "  \
  "'created_at', i.created_at, 'updated_at', i.updated_at, 'provisioned_at', "                \
  "i.provisioned_at, 'suspended_at', i.suspended_at, 'deleted_at', i.deleted_at)"

sb_api_worker_t *sb_api_worker_new(const sb_api_shared_t *shared, sb_error_t *err) {
  sb_api_worker_t *w = sb_xcalloc(1, sizeof *w);
  w->shared = shared;
  w->db = sb_db_connect(shared->db_url, NULL, "solobase api", err);
  if (!w->db) goto fail;
  w->pe = sb_policy_engine_new(shared->policies, err);
  if (!w->pe) goto fail;
  w->L = luaL_newstate();
  luaL_openlibs(w->L);
  sb_lua_json_open(w->L);
  return w;
fail:
  sb_api_worker_free(w);
  return NULL;
}

void sb_api_worker_free(sb_api_worker_t *w) {
  if (!w) return;
  sb_db_free(w->db);
  sb_policy_engine_free(w->pe);
  if (w->L) lua_close(w->L);
  free(w);
}

void sb_api_response_free(sb_api_response_t *resp) {
  free(resp->body);
  resp->body = NULL;
}

/* ---- answers ------------------------------------------------------------------------ */

static void set_body(sb_api_response_t *resp, int status, const char *text, size_t len) {
  free(resp->body);
  resp->status = status;
  resp->body = sb_xmalloc(len + 1);
  memcpy(resp->body, text, len);
  resp->body[len] = '\0';
  resp->len = len;
  resp->content_type = "application/json";
}

/* s (n bytes) as UTF-8 text into out (cap bytes, NUL-terminated, cut at a character):
 * each byte that is not part of a UTF-8 character (a NUL too) becomes U+FFFD. What an
 * error echoes of a request (a path, a field's name) may be anything, and lua-cjson
 * copies bytes as they are: this keeps every answer valid JSON. */
static void clean_text(const char *s, size_t n, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t c = sb_utf8_char(s + i, n - i);
    const char *from = c ? s + i : "\xef\xbf\xbd";
    size_t len = c ? c : 3;
    if (o + len >= cap) break;
    memcpy(out + o, from, len);
    o += len;
    i += c ? c : 1;
  }
  out[o] = '\0';
}

/* {"error": {"code", "message"[, "field"]}}, encoded by lua-cjson. */
static void fail(sb_api_worker_t *w, sb_api_response_t *resp, int status, const char *code,
                 const char *field, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void fail(sb_api_worker_t *w, sb_api_response_t *resp, int status, const char *code,
                 const char *field, const char *fmt, ...) {
  char raw[1024], msg[3 * sizeof raw], name[3 * 64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  clean_text(raw, strlen(raw), msg, sizeof msg);
  lua_State *L = w->L;
  lua_createtable(L, 0, 1);
  lua_createtable(L, 0, 3);
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  if (field) {
    clean_text(field, strnlen(field, 64), name, sizeof name);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "field");
  }
  lua_setfield(L, -2, "error");
  size_t len;
  char *json = sb_lua_json_encode(L, -1, &len, NULL);
  lua_pop(L, 1);
  if (!json) {
    set_body(resp, 500, "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}", 56);
    return;
  }
  free(resp->body);
  resp->status = status;
  resp->body = json;
  resp->len = len;
  resp->content_type = "application/json";
}

/* 405 with the Allow header RFC 9110 15.5.6 requires (methods: "GET", "GET, POST"). */
static void not_allowed(sb_api_worker_t *w, sb_api_response_t *resp, const char *methods) {
  fail(w, resp, 405, "method_not_allowed", NULL, "allowed: %s", methods);
  resp->allow = methods;
}

/* Maps a failure of the core to an HTTP error. */
static void fail_err(sb_api_worker_t *w, sb_api_response_t *resp, const sb_error_t *err) {
  const char *s = err->sqlstate;
  if (strcmp(s, SB_ERR_INVALID) == 0) fail(w, resp, 400, "invalid_field", NULL, "%s", err->msg);
  else if (strcmp(s, SB_ERR_REFUSED) == 0) fail(w, resp, 403, "refused", NULL, "%s", err->msg);
  else if (strcmp(s, SB_ERR_NOT_FOUND) == 0) fail(w, resp, 404, "not_found", NULL, "%s", err->msg);
  else if (strcmp(s, SB_ERR_CONFLICT) == 0) fail(w, resp, 409, "conflict", NULL, "%s", err->msg);
  else if (strcmp(s, "22P02") == 0) fail(w, resp, 404, "not_found", NULL, "no such instance");
  else if (strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0)
    fail(w, resp, 503, "unavailable", NULL, "the database is not reachable; try again");
  else {
    sb_error("api", "%s [%s]", err->msg, s);
    fail(w, resp, 500, "internal", NULL, "internal error");
  }
}

/* ---- queries as the caller ------------------------------------------------------------- */

/* Reconnects a worker whose connection broke; true when it is usable. */
static bool db_ready(sb_api_worker_t *w) {
  if (PQstatus(w->db->conn) == CONNECTION_OK) return true;
  sb_error_t err;
  sb_db_t *db = sb_db_connect(w->shared->db_url, NULL, "solobase api", &err);
  if (!db) return false;
  sb_db_free(w->db);
  w->db = db;
  return true;
}

/* db_ready() for the websocket checks: false with err (08006) when there is no database. */
static bool db_usable(sb_api_worker_t *w, sb_error_t *err) {
  if (db_ready(w)) return true;
  sb_error_set(err, "the database is not reachable");
  memcpy(err->sqlstate, "08006", 6);
  return false;
}

static const char as_customer_sql[] =
    "SELECT set_config('role', 'sb_api_customer', true), set_config('sb.user_id', $1, true)";
/* Unprepared reads are to be planned for their values, but an API worker's connection
 * has plan_cache_mode = force_generic_plan for its prepared statements (core/db.c), and
 * that applies to unnamed statements too: these set it back for their own implicit
 * transaction only (the pipeline's one Sync ends it). */
static const char as_customer_planned_sql[] =
    "SELECT set_config('role', 'sb_api_customer', true), set_config('sb.user_id', $1, true), "
    "set_config('plan_cache_mode', 'force_custom_plan', true)";
static const char planned_sql[] = "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)";

/* The statements of read_as() into st (the query last); how many. cp keeps the
 * customer's parameter and lives as long as st. Unprepared (`prepared` false), the
 * query is planned for its values. */
static int read_as_stmts(const sb_principal_t *who, const char *sql, int n,
                         const char *const *params, bool prepared, const char **cp,
                         sb_db_stmt_t st[2]) {
  if (who->operator) {
    if (prepared) {
      st[0] = (sb_db_stmt_t){sql, n, params, true, NULL};
      return 1;
    }
    st[0] = (sb_db_stmt_t){planned_sql, 0, NULL, true, NULL};
  } else {
    cp[0] = who->user_id;
    st[0] = (sb_db_stmt_t){prepared ? as_customer_sql : as_customer_planned_sql, 1, cp, true, NULL};
  }
  st[1] = (sb_db_stmt_t){sql, n, params, prepared, NULL};
  return 2;
}

/* Runs a read (sql, a static string) as who: operators directly; customers as the role
 * sb_api_customer with sb.user_id set, in one implicit transaction and one round trip,
 * so row-level security applies. */
static PGresult *read_as_x(sb_api_worker_t *w, const sb_principal_t *who, const char *sql,
                           int n, const char *const *params, bool prepared, sb_error_t *err) {
  if (who->operator && prepared) return sb_db_query_prepared(w->db, sql, n, params, err);
  const char *cp[1];
  sb_db_stmt_t stmts[2];
  int k = read_as_stmts(who, sql, n, params, prepared, cp, stmts);
  if (sb_db_pipeline(w->db, stmts, k, err) != 0) return NULL;
  PQclear(stmts[0].result);
  return stmts[1].result;
}

static PGresult *read_as(sb_api_worker_t *w, const sb_principal_t *who, const char *sql, int n,
                         const char *const *params, sb_error_t *err) {
  return read_as_x(w, who, sql, n, params, true, err);
}

/* A read planned for its values each time. Prepared statements run as generic plans
 * (core/db.c): for a range (ids after a position) the generic plan of `seq > $1` made
 * while instance_events was small reads the whole table for every page; for optional
 * filters (`$1 IS NULL OR status = $1`) no index can serve a generic plan, so a list
 * by a rare status read every instance (test_instance_list_reads_what_it_lists). */
static PGresult *read_planned_as(sb_api_worker_t *w, const sb_principal_t *who, const char *sql,
                               int n, const char *const *params, sb_error_t *err) {
  return read_as_x(w, who, sql, n, params, false, err);
}

/* The user a customer's query names as well ($n::uuid IS NULL OR user_id = $n): NULL
 * for operators. Row-level security is the second, independent layer. */
static const char *owner_of(const sb_principal_t *who) { return who->operator ? NULL : who->user_id; }

/* ---- request pieces ------------------------------------------------------------------------ */

/* The value of name in the query string, URL-decoded, into out (len bytes): 1 when it
 * is there, 0 when it is not, -1 after a 400 when it is not UTF-8 text (an invalid
 * sequence, a NUL) or does not fit: PostgreSQL refuses such text, and a value cut
 * short would be another value. */
static int query_param(sb_api_worker_t *w, sb_api_response_t *resp, const char *query,
                       const char *name, char *out, size_t len) {
  size_t nlen = strlen(name);
  for (const char *p = query; p && *p;) {
    const char *amp = strchr(p, '&');
    size_t plen = amp ? (size_t)(amp - p) : strlen(p);
    if (plen > nlen && strncmp(p, name, nlen) == 0 && p[nlen] == '=') {
      size_t o = 0;
      bool fits = true;
      for (size_t i = nlen + 1; i < plen; i++) {
        if (o + 1 >= len) {
          fits = false;
          break;
        }
        if (p[i] == '%' && i + 2 < plen && isxdigit((unsigned char)p[i + 1]) &&
            isxdigit((unsigned char)p[i + 2])) {
          char hex[3] = {p[i + 1], p[i + 2], 0};
          out[o++] = (char)strtol(hex, NULL, 16);
          i += 2;
        } else {
          out[o++] = p[i] == '+' ? ' ' : p[i];
        }
      }
      out[o] = '\0';
      if (!fits || sb_utf8_length(out, o) < 0) {
        fail(w, resp, 400, "bad_request", name, "%s must be UTF-8 text of at most %zu bytes",
             name, len - 1);
        return -1;
      }
      return 1;
    }
    p = amp ? amp + 1 : NULL;
  }
  return 0;
}

/* An integer query parameter within [min, max] (min >= 0); def when absent; -1 sets a
 * 400. */
static long long int_param(sb_api_worker_t *w, sb_api_response_t *resp, const char *query,
                           const char *name, long long def, long long min, long long max) {
  char v[32];
  int has = query_param(w, resp, query, name, v, sizeof v);
  if (has <= 0) return has < 0 ? -1 : def;
  char *end;
  long long n = strtoll(v, &end, 10);
  if (!*v || *end || n < min || n > max) {
    fail(w, resp, 400, "bad_request", name, "%s must be an integer from %lld to %lld", name, min, max);
    return -1;
  }
  return n;
}

/* Ids are compared in their canonical form, lower case (sb_uuid_canonical): PostgreSQL
 * reads either case, so a comparison in C must too. */
static bool canonical_uuid(const char *s, char *out) { return sb_uuid_canonical(s, strlen(s), out); }

static bool is_uuid(const char *s) {
  char canonical[37];
  return canonical_uuid(s, canonical);
}

/* The list's cursor: "<created_at in epoch microseconds>.<id>" of the last row seen,
 * as the API gives it: a positive integer (digits, no sign or leading zero, within a
 * bigint), into ts (20 bytes), and a uuid, into id (37 bytes). */
static bool parse_cursor(const char *s, char *ts, char *id) {
  const char *dot = strchr(s, '.');
  size_t n = dot ? (size_t)(dot - s) : 0;
  if (n < 1 || n > 19 || s[0] == '0' || strspn(s, "0123456789") != n ||
      (n == 19 && strncmp(s, "9223372036854775807", 19) > 0))
    return false;
  memcpy(ts, s, n);
  ts[n] = '\0';
  return canonical_uuid(dot + 1, id);
}

/* True for a Content-Type naming application/json: the media type before any
 * parameters (`; charset=utf-8`), matched case-insensitively (RFC 9110, 8.3.1), the
 * whitespace around it ignored. */
static bool is_json_type(const char *content_type) {
  const char *s = content_type + strspn(content_type, " \t");
  size_t n = strcspn(s, ";");
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
  return n == 16 && strncasecmp(s, "application/json", 16) == 0;
}

/* Decodes a JSON object body into the Lua stack (top) and checks its fields: every key
 * one of `allowed` ("a b c"; "" for a route that takes none), every value a string of
 * UTF-8 text with no NUL (lua-cjson decodes "\u0000" and passes invalid bytes on,
 * which C strings and PostgreSQL would cut or refuse). No body at all is an empty
 * object unless `required`. false after setting a 4xx, nothing pushed. */
static bool read_body(sb_api_worker_t *w, const sb_api_request_t *req, sb_api_response_t *resp,
                      const char *allowed, bool required) {
  lua_State *L = w->L;
  if (!req->body || req->body_len == 0) {
    if (required) {
      fail(w, resp, 400, "bad_request", NULL, "a JSON object body is needed");
      return false;
    }
    lua_newtable(L);
    return true;
  }
  if (!is_json_type(req->content_type)) {
    fail(w, resp, 415, "unsupported_media_type", NULL, "the body must be application/json");
    return false;
  }
  /* lua-cjson decodes [] and {} alike, as an empty table. */
  if (req->body[strspn(req->body, " \t\r\n")] != '{') {
    fail(w, resp, 400, "bad_request", NULL, "the body must be a JSON object");
    return false;
  }
  sb_error_t err;
  if (sb_lua_json_decode(L, req->body, req->body_len, &err) != 0) {
    fail(w, resp, 400, "bad_request", NULL, "%s", err.msg);
    return false;
  }
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    fail(w, resp, 400, "bad_request", NULL, "the body must be a JSON object");
    return false;
  }
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      lua_pop(L, 3);
      fail(w, resp, 400, "bad_request", NULL, "the body must be a JSON object");
      return false;
    }
    size_t klen, vlen;
    const char *k = lua_tolstring(L, -2, &klen);
    if (strlen(k) != klen || !sb_word_in(allowed, k)) {
      char name[3 * 64];
      clean_text(k, klen < 64 ? klen : 64, name, sizeof name);
      if (allowed[0])
        fail(w, resp, 400, "unknown_field", name, "unknown field '%s' (this route takes: %s)", name, allowed);
      else
        fail(w, resp, 400, "unknown_field", name, "unknown field '%s' (this route takes none)", name);
      lua_pop(L, 3);
      return false;
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
      fail(w, resp, 400, "invalid_field", k, "'%s' must be a string", k);
      lua_pop(L, 3);
      return false;
    }
    const char *v = lua_tolstring(L, -1, &vlen);
    if (sb_utf8_length(v, vlen) < 0) {
      fail(w, resp, 400, "invalid_field", k, "'%s' must be UTF-8 text without NUL characters", k);
      lua_pop(L, 3);
      return false;
    }
    lua_pop(L, 1);
  }
  return true;
}

/* A string field of the body table on top; NULL when absent. Stays valid while the
 * table is on the stack. */
static const char *body_string(lua_State *L, const char *name) {
  lua_getfield(L, -1, name);
  const char *s = lua_tostring(L, -1);
  lua_pop(L, 1);
  return s;
}

/* ---- routes ---------------------------------------------------------------------------- */

static void route_plans(sb_api_worker_t *w, const sb_principal_t *who, sb_api_response_t *resp) {
  sb_error_t err;
  PGresult *res = read_as(w, who,
                          "SELECT json_build_object('plans', coalesce(json_agg(json_build_object("
                          "'code', code, 'name', name, 'database_tier', database_tier, "
                          "'compute_tier', compute_tier, 'price_monthly_cents', price_monthly_cents, "
                          "'currency', currency, 'storage_quota_gb', storage_quota_gb, "
                          "'api_requests_quota_daily', api_requests_quota_daily, "
                          "'max_instances', max_instances, 'backup_interval_hours', "
                          "backup_interval_hours, 'backup_retention_days', backup_retention_days, "
                          "'pitr_window_minutes', pitr_window_minutes) ORDER BY sort_order), "
                          "'[]'::json))::text FROM plans WHERE is_active",
                          0, NULL, &err);
  if (!res) return fail_err(w, resp, &err);
  set_body(resp, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  PQclear(res);
}

/* The instance as GET /v1/instances/{id} reads it, for who (owner_of(who) as $2). */
static const char instance_sql[] =
    "SELECT json_build_object('instance', " INSTANCE_JSON ")::text "
    "FROM instances i WHERE i.id = $1::uuid AND ($2::uuid IS NULL OR i.user_id = $2::uuid)";

/* The answer from an instance query's result (consumed): status with the document, or
 * a 404 when no row came back (not there, or not who's). */
static bool instance_reply(sb_api_worker_t *w, PGresult *res, const char *id, bool created,
                           int status, sb_api_response_t *resp) {
  if (PQntuples(res) == 0) {
    PQclear(res);
    fail(w, resp, 404, "not_found", NULL, "no instance %s", id);
    return false;
  }
  set_body(resp, status, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  if (created) snprintf(resp->location, sizeof resp->location, "/v1/instances/%s", id);
  PQclear(res);
  return true;
}

/* {"instance": ...[, "job": {...}]} for an instance visible to who; false (after a
 * 404 or error) when it is not. */
static bool instance_answer(sb_api_worker_t *w, const sb_principal_t *who, const char *id,
                            const char *job_id, const char *job_kind, int status,
                            sb_api_response_t *resp) {
  if (!is_uuid(id)) {
    fail(w, resp, 404, "not_found", NULL, "no instance %.40s", id);
    return false;
  }
  sb_error_t err;
  PGresult *res;
  if (job_id) {
    /* The job's status now (it may have started already); jobs are the engine's table,
     * not visible to sb_api_customer, so it is read first on the worker's own role. */
    const char *jp[] = {job_id};
    PGresult *job = sb_db_query_prepared(w->db, "SELECT status FROM jobs WHERE id = $1::uuid", 1, jp, &err);
    if (!job) {
      fail_err(w, resp, &err);
      return false;
    }
    char job_status[16];
    snprintf(job_status, sizeof job_status, "%s", PQntuples(job) ? PQgetvalue(job, 0, 0) : "done");
    PQclear(job);
    const char *p[] = {id, job_id, job_kind, job_status, owner_of(who)};
    res = read_as(w, who,
                  "SELECT json_build_object('instance', " INSTANCE_JSON ", 'job', "
                  "json_build_object('id', $2::uuid, 'kind', $3::text, 'status', $4::text))::text "
                  "FROM instances i WHERE i.id = $1::uuid AND ($5::uuid IS NULL OR i.user_id = $5::uuid)",
                  5, p, &err);
  } else {
    const char *p[] = {id, owner_of(who)};
    res = read_as(w, who, instance_sql, 2, p, &err);
  }
  if (!res) {
    fail_err(w, resp, &err);
    return false;
  }
  return instance_reply(w, res, id, job_id != NULL, status, resp);
}

static void route_create(sb_api_worker_t *w, const sb_principal_t *who,
                         const sb_api_request_t *req, sb_api_response_t *resp) {
  if (!read_body(w, req, resp, "plan name subdomain user_id region", true)) return;
  lua_State *L = w->L;
  const char *plan = body_string(L, "plan"), *name = body_string(L, "name");
  const char *sub = body_string(L, "subdomain"), *user = body_string(L, "user_id");
  const char *region = body_string(L, "region");
  const char *missing = !plan ? "plan" : !name ? "name" : !sub ? "subdomain" : NULL;
  char user_id[37];
  if (missing) {
    fail(w, resp, 400, "invalid_field", missing, "'%s' is required", missing);
  } else if (user && !canonical_uuid(user, user_id)) {
    fail(w, resp, 400, "invalid_field", "user_id", "user_id must be a uuid");
  } else if (user && !who->operator && strcmp(user_id, who->user_id) != 0) {
    fail(w, resp, 403, "forbidden", "user_id", "a customer token creates instances for its own user");
  } else {
    char actor[64];
    snprintf(actor, sizeof actor, "api:%.36s", who->token_id);
    sb_fleet_ctx_t ctx = {w->db, w->pe, NULL, w->shared->keys, actor};
    sb_provision_request_t pr = {user ? user_id : who->user_id, plan, name, sub, region};
    sb_provision_result_t out;
    sb_error_t err;
    if (sb_provision_request(&ctx, &pr, &out, &err) != 0) {
      bool bad = strcmp(err.sqlstate, SB_ERR_INVALID) == 0 || strcmp(err.sqlstate, SB_ERR_NOT_FOUND) == 0;
      if (bad && out.field) fail(w, resp, 400, "invalid_field", out.field, "%s", err.msg);
      else fail_err(w, resp, &err);
    } else {
      instance_answer(w, who, out.instance_id, out.job_id, "instance.provision", 202, resp);
    }
  }
  lua_pop(L, 1);
}

static void route_list(sb_api_worker_t *w, const sb_principal_t *who, const sb_api_request_t *req,
                       sb_api_response_t *resp) {
  char status[32] = "", raw_user[64] = "", user[37] = "", cursor[128] = "";
  int has_status = query_param(w, resp, req->query, "status", status, sizeof status);
  if (has_status < 0) return;
  int has_user = query_param(w, resp, req->query, "user_id", raw_user, sizeof raw_user);
  if (has_user < 0 || query_param(w, resp, req->query, "cursor", cursor, sizeof cursor) < 0) return;
  long long limit = int_param(w, resp, req->query, "limit", 50, 1, 200);
  if (limit < 0) return;
  if (has_user && !canonical_uuid(raw_user, user))
    return fail(w, resp, 400, "bad_request", "user_id", "user_id must be a uuid");
  if (has_user && !who->operator && strcmp(user, who->user_id) != 0)
    return fail(w, resp, 403, "forbidden", "user_id", "a customer token lists its own instances only");
  char cts[20] = "", cid[37] = "";
  if (cursor[0] && !parse_cursor(cursor, cts, cid))
    return fail(w, resp, 400, "bad_request", "cursor", "cursor is not one this API gave");
  char lim[16];
  snprintf(lim, sizeof lim, "%lld", limit);
  const char *p[] = {has_status ? status : NULL, has_user ? user : (who->operator ? NULL : who->user_id),
                     cts[0] ? cts : NULL, cid[0] ? cid : NULL, lim};
  sb_error_t err;
  PGresult *res = read_planned_as(
      w, who,
      "WITH page AS (SELECT i.* FROM instances i WHERE ($1::text IS NULL OR i.status = $1) "
      "AND ($2::uuid IS NULL OR i.user_id = $2::uuid) AND ($3::bigint IS NULL OR "
      "(i.created_at, i.id) < (to_timestamp($3::bigint / 1e6), $4::uuid)) "
      "ORDER BY i.created_at DESC, i.id DESC LIMIT $5::int + 1) "
      "SELECT json_build_object('instances', coalesce((SELECT json_agg(" INSTANCE_JSON
      " ORDER BY i.created_at DESC, i.id DESC) FROM (SELECT * FROM page ORDER BY created_at DESC, "
      "id DESC LIMIT $5::int) i), '[]'::json), 'next_cursor', (SELECT CASE WHEN count(*) > $5::int "
      "THEN (SELECT (extract(epoch FROM created_at) * 1e6)::bigint || '.' || id FROM page "
      "ORDER BY created_at DESC, id DESC OFFSET $5::int - 1 LIMIT 1) END FROM page))::text",
      5, p, &err);
  if (!res) return fail_err(w, resp, &err);
  set_body(resp, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  PQclear(res);
}

typedef int (*lifecycle_fn)(sb_fleet_ctx_t *, const char *, char *, sb_error_t *);

/* DELETE, suspend, resume: check the body (suspend takes a reason, the others nothing)
 * and visibility, queue the change, answer 202. Every refusal comes before the change. */
static void route_lifecycle(sb_api_worker_t *w, const sb_principal_t *who, const char *id,
                            const char *action, const sb_api_request_t *req,
                            sb_api_response_t *resp) {
  bool suspend = strcmp(action, "suspend") == 0, resume = strcmp(action, "resume") == 0;
  if ((suspend || resume) && !who->operator)
    return fail(w, resp, 403, "forbidden", NULL, "only operator tokens suspend and resume instances");
  if (!read_body(w, req, resp, suspend ? "reason" : "", false)) return;
  if (instance_answer(w, who, id, NULL, NULL, 200, resp)) { /* else a 404: not visible */
    const char *reason = suspend ? body_string(w->L, "reason") : NULL;
    char actor[64], job[37];
    snprintf(actor, sizeof actor, "api:%.36s", who->token_id);
    sb_fleet_ctx_t ctx = {w->db, w->pe, NULL, w->shared->keys, actor};
    sb_error_t err;
    int rc = suspend ? sb_instance_suspend(&ctx, id, reason, job, &err)
             : resume ? sb_instance_resume(&ctx, id, job, &err)
                      : sb_instance_deprovision(&ctx, id, job, &err);
    if (rc != 0 && suspend && strcmp(err.sqlstate, SB_ERR_INVALID) == 0)
      fail(w, resp, 400, "invalid_field", "reason", "%s", err.msg);
    else if (rc != 0)
      fail_err(w, resp, &err);
    else
      instance_answer(w, who, id, job,
                      suspend ? "instance.suspend" : resume ? "instance.resume" : "instance.deprovision",
                      202, resp);
  }
  lua_pop(w->L, 1); /* the body */
}

PGresult *sb_api_events_page(sb_api_worker_t *w, const sb_principal_t *who, int64_t after,
                             int64_t before, int limit, int64_t *oldest, sb_error_t *err) {
  if (!db_usable(w, err)) return NULL;
  char a[32], b[32], l[16];
  snprintf(a, sizeof a, "%lld", (long long)after);
  snprintf(b, sizeof b, "%lld", (long long)before);
  snprintf(l, sizeof l, "%d", limit);
  const char *p[] = {a, b, l, owner_of(who)};
  PGresult *res = read_planned_as(w, who,
                          "SELECT " SB_EVENT_COLUMNS ", sb_events_oldest() "
                          "FROM instance_events e WHERE e.seq > $1::bigint "
                          "AND ($2::bigint = 0 OR e.seq < $2::bigint) "
                          "AND ($4::uuid IS NULL OR e.user_id = $4::uuid) ORDER BY e.seq LIMIT $3::int",
                          4, p, err);
  if (!res) return NULL;
  *oldest = 0;
  if (PQntuples(res) > 0) *oldest = atoll(PQgetvalue(res, 0, 5));
  else {
    PGresult *m = sb_db_query_prepared(w->db, "SELECT sb_events_oldest()", 0, NULL, err);
    if (m) {
      *oldest = atoll(PQgetvalue(m, 0, 0));
      PQclear(m);
    }
  }
  return res;
}

static void route_events(sb_api_worker_t *w, const sb_principal_t *who, const char *id,
                         const sb_api_request_t *req, sb_api_response_t *resp) {
  if (!is_uuid(id)) return fail(w, resp, 404, "not_found", NULL, "no instance %.40s", id);
  long long after = int_param(w, resp, req->query, "after", 0, 0, (1LL << 62));
  if (after < 0) return;
  long long limit = int_param(w, resp, req->query, "limit", 100, 1, 500);
  if (limit < 0) return;
  char a[32], l[16];
  snprintf(a, sizeof a, "%lld", after);
  snprintf(l, sizeof l, "%lld", limit);
  const char *p[] = {id, a, l, owner_of(who)};
  sb_error_t err;
  PGresult *res = read_as(
      w, who,
      "SELECT CASE WHEN EXISTS (SELECT 1 FROM instances WHERE id = $1::uuid "
      "AND ($4::uuid IS NULL OR user_id = $4::uuid)) THEN "
      "(SELECT json_build_object('events', coalesce(json_agg(x.j ORDER BY x.seq), '[]'::json))::text "
      " FROM (SELECT e.seq, json_build_object('id', e.seq, 'event_id', e.id, 'type', e.event_type, "
      " 'instance_id', e.instance_id, 'user_id', e.user_id, 'shared_rds_id', e.shared_rds_id, "
      " 'description', e.description, 'payload', e.payload, 'actor', e.actor, 'created_at', "
      " to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) AS j "
      " FROM instance_events e WHERE e.instance_id = $1::uuid AND e.seq > $2::bigint "
      " AND ($4::uuid IS NULL OR e.user_id = $4::uuid) ORDER BY e.seq LIMIT $3::int) x) END",
      4, p, &err);
  if (!res) return fail_err(w, resp, &err);
  if (PQgetisnull(res, 0, 0)) {
    PQclear(res);
    return fail(w, resp, 404, "not_found", NULL, "no instance %s", id);
  }
  set_body(resp, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  PQclear(res);
}

static void route_servers(sb_api_worker_t *w, const sb_principal_t *who, sb_api_response_t *resp) {
  if (!who->operator) return fail(w, resp, 403, "forbidden", NULL, "operator tokens only");
  sb_error_t err;
  /* The spec's capacity report, as JSON, with the dedicated servers beside it. */
  PGresult *res = sb_db_query_prepared(
      w->db,
      "SELECT json_build_object('servers', coalesce(json_agg(s ORDER BY s.tier DESC, "
      "s.usage_percentage DESC NULLS LAST, s.rds_instance_id), '[]'::json))::text FROM ("
      "SELECT id, rds_instance_id, 'shared' AS tier, status, current_databases, max_databases, "
      "ROUND(100.0 * current_databases / max_databases, 2) AS usage_percentage, storage_used_gb, "
      "storage_total_gb, host, port, pooler_port, last_health_check_at FROM shared_rds_instances "
      "UNION ALL SELECT id, rds_instance_id, 'dedicated', status, NULL, NULL, NULL, "
      "storage_used_gb, storage_total_gb, host, port, NULL, last_health_check_at "
      "FROM dedicated_rds_instances WHERE status <> 'retired') s",
      0, NULL, &err);
  if (!res) return fail_err(w, resp, &err);
  set_body(resp, 200, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
  PQclear(res);
}

static void route_healthz(sb_api_worker_t *w, sb_api_response_t *resp) {
  sb_error_t err;
  bool db_ok = db_ready(w);
  if (db_ok) {
    PGresult *res = sb_db_query_prepared(w->db, "SELECT 1", 0, NULL, &err);
    db_ok = res != NULL;
    PQclear(res);
  }
  bool policies_ok = sb_policy_registry_generation(w->shared->policies) > 0;
  /* After a database outage the engine takes jobs again once it has registered anew
   * (docs/architecture.md): until then it is not ready, though the database answers. */
  sb_metrics_extra_t x = {.engine_id = -1};
  if (w->shared->engine_stats) w->shared->engine_stats(w->shared->engine_ud, &x);
  bool engine_ok = x.engine_id != 0;
  bool ok = db_ok && policies_ok && engine_ok;
  char body[256];
  int n = snprintf(body, sizeof body,
                   "{\"status\": \"%s\", \"checks\": {\"database\": \"%s\", \"policies\": \"%s\", "
                   "\"engine\": \"%s\"}}",
                   ok ? "ok" : "unavailable", db_ok ? "ok" : "unreachable",
                   policies_ok ? "ok" : "not loaded", engine_ok ? "ok" : "registering");
  set_body(resp, ok ? 200 : 503, body, (size_t)n);
}

static void route_metrics(sb_api_worker_t *w, sb_api_response_t *resp) {
  sb_metrics_extra_t x = {.jobs_queued = -1, .jobs_running = -1, .jobs_succeeded = -1,
                          .jobs_dead = -1, .jobs_canceled = -1};
  if (w->shared->engine_stats) w->shared->engine_stats(w->shared->engine_ud, &x);
  sb_error_t err;
  if (db_ready(w)) {
    PGresult *res = sb_db_query_prepared(
        w->db,
        "SELECT count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = "
        "'running'), count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE "
        "status = 'dead'), count(*) FILTER (WHERE status = 'canceled') FROM jobs",
        0, NULL, &err);
    if (res) {
      x.jobs_queued = atol(PQgetvalue(res, 0, 0));
      x.jobs_running = atol(PQgetvalue(res, 0, 1));
      x.jobs_succeeded = atol(PQgetvalue(res, 0, 2));
      x.jobs_dead = atol(PQgetvalue(res, 0, 3));
      x.jobs_canceled = atol(PQgetvalue(res, 0, 4));
      PQclear(res);
    }
  }
  sb_policy_counters(&x.policy_decisions, &x.policy_errors);
  char *text = sb_metrics_render(&x);
  free(resp->body);
  resp->status = 200;
  resp->body = text;
  resp->len = strlen(text);
  resp->content_type = "text/plain; version=0.0.4";
}

int sb_api_authenticate(sb_api_worker_t *w, const char *token, sb_principal_t *who,
                        sb_error_t *err) {
  if (!db_usable(w, err)) return -1;
  return sb_auth_check(w->db, token, who, err);
}

int sb_api_authenticate_digest(sb_api_worker_t *w, const char *sha256_hex, sb_principal_t *who,
                               sb_error_t *err) {
  if (!db_usable(w, err)) return -1;
  return sb_auth_check_digest(w->db, sha256_hex, who, err);
}

int sb_api_instance_visible(sb_api_worker_t *w, const sb_principal_t *who, const char *id,
                            sb_error_t *err) {
  if (!db_usable(w, err)) return -1;
  char canonical[37];
  if (!canonical_uuid(id, canonical)) {
    sb_error_set(err, "no instance %.40s", id);
    memcpy(err->sqlstate, SB_ERR_NOT_FOUND, 6);
    return 0;
  }
  const char *p[] = {canonical, owner_of(who)};
  PGresult *res = read_as(w, who,
                          "SELECT 1 FROM instances WHERE id = $1::uuid "
                          "AND ($2::uuid IS NULL OR user_id = $2::uuid)",
                          2, p, err);
  if (!res) return -1;
  int n = PQntuples(res);
  PQclear(res);
  if (n == 0) {
    sb_error_set(err, "no instance %s", canonical);
    memcpy(err->sqlstate, SB_ERR_NOT_FOUND, 6);
  }
  return n > 0;
}

/* ---- the router --------------------------------------------------------------------------- */

/* A GET /v1/instances/{id} left for sb_api_handle_batch() to read with the others. */
typedef struct deferred_get {
  bool deferred;
  sb_principal_t who;
  char id[37];
  const char *params[2], *cp[1];
  sb_db_stmt_t stmts[2];
} deferred_get_t;

/* Routes and answers one request; with defer, a valid GET of one instance is only
 * checked (route, token, id) and left in *defer, resp untouched but for its route. */
static void handle(sb_api_worker_t *w, const sb_api_request_t *req, sb_api_response_t *resp,
                   deferred_get_t *defer) {
  memset(resp, 0, sizeof *resp);
  resp->route = SB_ROUTE_UNKNOWN;
  const char *path = req->path, *m = req->method;
  bool get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0, del = strcmp(m, "DELETE") == 0;
  int top = lua_gettop(w->L);

  if (strcmp(path, "/healthz") == 0) {
    resp->route = SB_ROUTE_HEALTHZ;
    if (!get) return not_allowed(w, resp, "GET");
    return route_healthz(w, resp);
  }
  if (strcmp(path, "/metrics") == 0) {
    resp->route = SB_ROUTE_METRICS;
    if (!get) return not_allowed(w, resp, "GET");
    return route_metrics(w, resp);
  }
  if (strncmp(path, "/v1/", 4) != 0) return fail(w, resp, 404, "not_found", NULL, "no route %.200s", path);
  if (req->body_too_large)
    return fail(w, resp, 413, "payload_too_large", NULL, "the body is over %d bytes", SB_API_MAX_BODY);

  /* Every /v1 route needs a token. */
  sb_principal_t who;
  sb_error_t err;
  if (!db_ready(w)) return fail(w, resp, 503, "unavailable", NULL, "the database is not reachable; try again");
  if (sb_auth_check(w->db, req->token[0] ? req->token : NULL, &who, &err) != 0) {
    resp->route = SB_ROUTE_UNKNOWN;
    if (strcmp(err.sqlstate, "SB401") == 0) return fail(w, resp, 401, "unauthorized", NULL, "%s", err.msg);
    return fail_err(w, resp, &err);
  }

  const char *rest = path + 4;
  if (strcmp(rest, "plans") == 0) {
    resp->route = SB_ROUTE_PLANS;
    if (!get) return not_allowed(w, resp, "GET");
    return route_plans(w, &who, resp);
  }
  if (strcmp(rest, "servers") == 0) {
    resp->route = SB_ROUTE_SERVERS;
    if (!get) return not_allowed(w, resp, "GET");
    return route_servers(w, &who, resp);
  }
  if (strcmp(rest, "instances") == 0) {
    resp->route = SB_ROUTE_INSTANCES;
    if (get) return route_list(w, &who, req, resp);
    if (post) return route_create(w, &who, req, resp);
    return not_allowed(w, resp, "GET, POST");
  }
  if (strncmp(rest, "instances/", 10) == 0) {
    char id[64] = "", action[32] = "", canonical[37];
    const char *p = rest + 10;
    const char *slash = strchr(p, '/');
    snprintf(id, sizeof id, "%.*s", (int)(slash ? (size_t)(slash - p) : strlen(p)), p);
    if (canonical_uuid(id, canonical)) memcpy(id, canonical, sizeof canonical);
    if (slash) snprintf(action, sizeof action, "%s", slash + 1);
    if (!action[0]) {
      resp->route = SB_ROUTE_INSTANCE;
      if (get && defer && is_uuid(id)) {
        defer->deferred = true;
        defer->who = who;
        snprintf(defer->id, sizeof defer->id, "%s", id);
        return;
      }
      if (get) {
        instance_answer(w, &who, id, NULL, NULL, 200, resp);
        return;
      }
      if (del) return route_lifecycle(w, &who, id, "delete", req, resp);
      return not_allowed(w, resp, "GET, DELETE");
    }
    if (strcmp(action, "events") == 0) {
      resp->route = SB_ROUTE_INSTANCE_EVENTS;
      if (!get) return not_allowed(w, resp, "GET");
      return route_events(w, &who, id, req, resp);
    }
    if (strcmp(action, "suspend") == 0 || strcmp(action, "resume") == 0) {
      resp->route = SB_ROUTE_INSTANCE_ACTION;
      if (!post) return not_allowed(w, resp, "POST");
      return route_lifecycle(w, &who, id, action, req, resp);
    }
  }
  lua_settop(w->L, top);
  fail(w, resp, 404, "not_found", NULL, "no route %.200s", path);
}

bool sb_api_batchable(const sb_api_request_t *req) {
  const char *id = req->path + strlen("/v1/instances/");
  return strcmp(req->method, "GET") == 0 && strncmp(req->path, "/v1/instances/", 14) == 0 &&
         *id && !strchr(id, '/');
}

void sb_api_handle_batch(sb_api_worker_t *w, const sb_api_request_t *const *reqs,
                         sb_api_response_t *const *resps, int n) {
  deferred_get_t *defer = sb_xcalloc((size_t)n, sizeof *defer);
  sb_db_group_t *groups = sb_xcalloc((size_t)n, sizeof *groups);
  int *of = sb_xcalloc((size_t)n, sizeof *of); /* groups[g] answers reqs[of[g]] */
  int ngroups = 0;
  for (int i = 0; i < n; i++) {
    deferred_get_t *d = &defer[i];
    /* Two statements per customer read: at most SB_DB_GROUP_MAX in all. */
    handle(w, reqs[i], resps[i], 2 * (ngroups + 1) <= SB_DB_GROUP_MAX ? d : NULL);
    if (!d->deferred) continue;
    d->params[0] = d->id;
    d->params[1] = owner_of(&d->who);
    groups[ngroups].stmts = d->stmts;
    groups[ngroups].n = read_as_stmts(&d->who, instance_sql, 2, d->params, true, d->cp, d->stmts);
    of[ngroups++] = i;
  }
  if (ngroups > 0) sb_db_pipeline_groups(w->db, groups, ngroups);
  for (int g = 0; g < ngroups; g++) {
    sb_db_group_t *gr = &groups[g];
    sb_api_response_t *resp = resps[of[g]];
    if (gr->rc != 0) {
      fail_err(w, resp, &gr->err);
      continue;
    }
    for (int k = 0; k + 1 < gr->n; k++) PQclear(gr->stmts[k].result);
    instance_reply(w, gr->stmts[gr->n - 1].result, defer[of[g]].id, false, 200, resp);
  }
  free(of);
  free(groups);
  free(defer);
}

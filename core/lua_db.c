/*
 * lua_db.c: sb.db, the management database for scripts and the REPL.
 *
 *   sb.db.query(sql, ...)       -> rows        array of row tables, typed values
 *   sb.db.one(sql, ...)         -> row | nil   the first row
 *   sb.db.exec(sql, ...)        -> n, command  rows affected and the command tag
 *   sb.db.transaction(fn, ...)  -> fn's results, committed; rolled back on error
 *
 * Parameters are $1..$n bound from the extra arguments, or $name bound from a single
 * table argument. Values: nil -> NULL, booleans, integers, floats, strings, tables
 * (sent as JSON, for jsonb). Results: integers and oids -> integer, float and numeric
 * -> number, boolean -> boolean, json/jsonb -> decoded value (JSON null -> nil, integral
 * numbers -> integers),
 * bytea -> raw bytes, NULL -> nil, everything else -> string. rows.columns lists the
 * column names in order and rows.command is the command tag. Every failure is a Lua
 * error "sb.db.query: <server message> [SQLSTATE]" at the caller's line.
 */
#include <lauxlib.h>
#include <lua-cjson.h>
#include <stdlib.h>
#include <string.h>

#include "luaconv.h"
#include "script.h"
#include "sqlparams.h"
#include "util.h"

/* PostgreSQL type oids (pg_type.h is a server header, so the few we need are here). */
enum {
  OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26,
  OID_JSON = 114, OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700, OID_JSONB = 3802
};

#define MAX_PARAMS 1000

static void free_result(void *p) { PQclear(p); }
static void free_named(void *p) {
  sb_sql_named_free(p);
  free(p);
}

/* Converts the Lua value at idx into text on the stack (or leaves nothing for nil);
 * returns the text, or NULL for SQL NULL. The text lives as long as the pushed
 * string stays on the stack. */
static const char *param_text(lua_State *L, int idx, int n) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: lua_pushnil(L); return NULL;
  case LUA_TBOOLEAN: lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f"); break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
    else {
      char buf[64];
      snprintf(buf, sizeof buf, "%.17g", lua_tonumber(L, idx));
      lua_pushstring(L, buf);
    }
    break;
  case LUA_TSTRING: lua_pushvalue(L, idx); break;
  case LUA_TTABLE: {
    lua_getfield(L, lua_upvalueindex(1), "encode");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
      luaL_error(L, "parameter %d: cannot encode the table as JSON: %s", n, lua_tostring(L, -1));
    break;
  }
  default:
    luaL_error(L, "parameter %d: cannot send a %s to PostgreSQL", n, luaL_typename(L, idx));
  }
  return lua_tostring(L, -1);
}

/* Pushes the value of one field. */
static void push_value(lua_State *L, const PGresult *res, int row, int col) {
  if (PQgetisnull(res, row, col)) {
    lua_pushnil(L);
    return;
  }
  const char *v = PQgetvalue(res, row, col);
  int len = PQgetlength(res, row, col);
  switch (PQftype(res, col)) {
  case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID:
    lua_pushinteger(L, (lua_Integer)strtoll(v, NULL, 10));
    return;
  case OID_FLOAT4: case OID_FLOAT8: case OID_NUMERIC:
    if (!lua_stringtonumber(L, v)) lua_pushlstring(L, v, (size_t)len); /* NaN, Infinity */
    return;
  case OID_BOOL: lua_pushboolean(L, v[0] == 't'); return;
  case OID_JSON: case OID_JSONB: {
    sb_error_t err;
    if (sb_lua_json_decode(L, v, (size_t)len, &err) != 0) lua_pushlstring(L, v, (size_t)len);
    return;
  }
  case OID_BYTEA: {
    size_t n = 0;
    unsigned char *bytes = PQunescapeBytea((const unsigned char *)v, &n);
    void **g = sb_lua_guard(L, bytes, PQfreemem);
    lua_pushlstring(L, (const char *)*g, n);
    sb_lua_guard_release(L, -2);
    lua_remove(L, -2);
    return;
  }
  default: lua_pushlstring(L, v, (size_t)len);
  }
}

/* Pushes rows (with .columns and .command) built from res. */
static void push_rows(lua_State *L, const PGresult *res) {
  int nrows = PQntuples(res), ncols = PQnfields(res);
  lua_createtable(L, nrows, 0);            /* rows */
  lua_createtable(L, 0, 2);                /* rows' metatable */
  lua_createtable(L, 0, 2);                /* its __index */
  lua_createtable(L, ncols, 0);            /* columns */
  for (int c = 0; c < ncols; c++) {
    lua_pushstring(L, PQfname(res, c));
    lua_rawseti(L, -2, c + 1);
  }
  lua_setfield(L, -2, "columns");
  lua_pushstring(L, PQcmdStatus((PGresult *)res));
  lua_setfield(L, -2, "command");
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, "sb.db.rows");
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
  for (int r = 0; r < nrows; r++) {
    lua_createtable(L, 0, ncols);
    for (int c = 0; c < ncols; c++) {
      push_value(L, res, r, c);
      lua_setfield(L, -2, PQfname(res, c));
    }
    lua_rawseti(L, -2, r + 1);
  }
}

/* Runs the statement at arg 1 with the parameters after it. Pushes a guard owning
 * the result and returns the result. `what` names the function in errors. */
static PGresult *run(lua_State *L, const char *what) {
  const char *sql = luaL_checkstring(L, 1);
  int nargs = lua_gettop(L) - 1;
  sb_db_t *db = sb_script_db(L);

  if (nargs > MAX_PARAMS) luaL_error(L, "%s: at most %d parameters", what, MAX_PARAMS);
  luaL_checkstack(L, nargs + 8, "too many parameters");
  const char *values[MAX_PARAMS];
  for (int i = 0; i < nargs; i++) values[i] = param_text(L, 2 + i, i + 1);
  sb_error_t err;
  PGresult *res = sb_db_query(db, sql, nargs, values, &err);
  if (!res) {
    if (sb_db_is_connection_error(&err) && db->tx_depth == 0) {
      /* Reconnect once: nothing was in flight. */
      res = sb_db_query(sb_script_db(L), sql, nargs, values, &err);
    }
    if (!res) luaL_error(L, "%s: %s [%s]", what, err.msg, err.sqlstate);
  }
  sb_lua_guard(L, res, free_result);
  return res;
}

/* Turns a call with one table of $name values into a positional call: rewrites the
 * stack to (sql', v1, ..., vn). */
static void bind_named(lua_State *L, const char *what) {
  if (lua_gettop(L) != 2 || !lua_istable(L, 2)) return;
  const char *sql = luaL_checkstring(L, 1);
  if (!strchr(sql, '$')) return;
  sb_sql_named_t *named = sb_xcalloc(1, sizeof *named);
  sb_lua_guard(L, named, free_named); /* sql, table, guard */
  sb_error_t err;
  if (sb_sql_named_parse(sql, named, &err) != 0) luaL_error(L, "%s: %s", what, err.msg);
  if (named->n == 0) {
    lua_pop(L, 1);
    return;
  }
  luaL_checkstack(L, named->n + 2, "too many parameters");
  lua_pushstring(L, named->sql);
  for (int i = 0; i < named->n; i++) lua_getfield(L, 2, named->names[i]);
  /* sql, table, guard, sql', v1..vn -> sql', v1..vn */
  lua_rotate(L, 1, -3);
  lua_pop(L, 3);
}

static int db_query(lua_State *L) {
  bind_named(L, "sb.db.query");
  PGresult *res = run(L, "sb.db.query");
  push_rows(L, res);
  sb_lua_guard_release(L, -2);
  return 1;
}

static int db_one(lua_State *L) {
  bind_named(L, "sb.db.one");
  PGresult *res = run(L, "sb.db.one");
  if (PQntuples(res) == 0) {
    sb_lua_guard_release(L, -1);
    lua_pushnil(L);
    return 1;
  }
  push_rows(L, res);
  lua_rawgeti(L, -1, 1);
  sb_lua_guard_release(L, -3);
  return 1;
}

static int db_exec(lua_State *L) {
  bind_named(L, "sb.db.exec");
  PGresult *res = run(L, "sb.db.exec");
  const char *n = PQcmdTuples(res);
  lua_pushinteger(L, *n ? (lua_Integer)strtoll(n, NULL, 10) : 0);
  lua_pushstring(L, PQcmdStatus(res));
  sb_lua_guard_release(L, -3);
  return 2;
}

/* sb.db.transaction(fn, ...): runs fn(...) in a transaction (a savepoint when nested);
 * commits when it returns, rolls back and re-raises when it fails. */
static int db_transaction(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  sb_db_t *db = sb_script_db(L);
  sb_error_t err;
  if (sb_db_begin(db, &err) != 0) luaL_error(L, "sb.db.transaction: %s [%s]", err.msg, err.sqlstate);
  int nargs = lua_gettop(L) - 1;
  if (lua_pcall(L, nargs, LUA_MULTRET, 0) != LUA_OK) {
    sb_db_rollback(db, &err); /* the original error is the one to report */
    return lua_error(L);
  }
  if (sb_db_commit(db, &err) != 0)
    luaL_error(L, "sb.db.transaction: commit failed: %s [%s]", err.msg, err.sqlstate);
  return lua_gettop(L);
}

void sb_lua_open_db(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"query", db_query}, {"one", db_one}, {"exec", db_exec}, {"transaction", db_transaction},
      {NULL, NULL},
  };
  lua_newtable(L);
  luaopen_cjson(L); /* upvalue 1: JSON for jsonb in and out */
  luaL_setfuncs(L, fns, 1);
}

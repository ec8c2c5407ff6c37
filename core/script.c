/*
 * script.c: the operator scripting state and its context (see script.h).
 */
#include "script.h"

#include <lauxlib.h>
#include <lualib.h>
#include <lua-cjson.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "decision.h"
#include "embedded.h"
#include "log.h"
#include "mgmtdb.h"
#include "util.h"

static const char ctx_key = 'c'; /* registry: light userdata sb_script_t * */

typedef struct guard {
  void *ptr;
  sb_lua_free_fn fn;
} guard_t;

static int guard_gc(lua_State *L) {
  guard_t *g = lua_touserdata(L, 1);
  if (g->ptr && g->fn) g->fn(g->ptr);
  g->ptr = NULL;
  return 0;
}

void **sb_lua_guard(lua_State *L, void *ptr, sb_lua_free_fn free_fn) {
  guard_t *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->ptr = NULL;
  g->fn = free_fn;
  if (luaL_newmetatable(L, "sb.guard")) {
    lua_pushcfunction(L, guard_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  g->ptr = ptr; /* only now: the allocations above may have raised */
  return &g->ptr;
}

void sb_lua_guard_release(lua_State *L, int idx) {
  guard_t *g = luaL_checkudata(L, idx, "sb.guard");
  if (g->ptr && g->fn) g->fn(g->ptr);
  g->ptr = NULL;
}

sb_script_t *sb_script_ctx(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &ctx_key);
  sb_script_t *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (!s) luaL_error(L, "the sb API is only available in solobase scripts and the REPL");
  return s;
}

sb_db_t *sb_script_db(lua_State *L) {
  sb_script_t *s = sb_script_ctx(L);
  if (s->db && PQstatus(s->db->conn) != CONNECTION_OK && s->db->tx_depth == 0) {
    /* A dropped connection outside a transaction loses nothing: reconnect. */
    sb_db_free(s->db);
    s->db = NULL;
  }
  if (s->db) return s->db;
  sb_error_t err;
  char *app = sb_xasprintf("solobase %s", s->name);
  s->db = sb_mgmtdb_connect(app, &err);
  free(app);
  if (!s->db) luaL_error(L, "sb.db: %s", err.msg);
  if (s->dry_run && sb_db_begin(s->db, &err) != 0) {
    sb_db_free(s->db);
    s->db = NULL;
    luaL_error(L, "sb.db: %s", err.msg);
  }
  return s->db;
}

/* Records each loaded or refused policy version (connecting if need be; a script
 * without a reachable database still gets its policies). */
static void record_version(void *ud, const sb_policy_result_t *r, const char *source) {
  sb_script_t *s = ud;
  sb_error_t err;
  if (!s->db) {
    char *app = sb_xasprintf("solobase %s", s->name);
    s->db = sb_mgmtdb_connect(app, &err);
    free(app);
    if (!s->db) {
      sb_warn("policy", "cannot record %s version %.12s: %s", r->name, r->sha256, err.msg);
      return;
    }
    if (s->dry_run && sb_db_begin(s->db, &err) != 0) {
      /* Never let a dry run write outside its transaction. */
      sb_db_free(s->db);
      s->db = NULL;
      return;
    }
  }
  if (sb_decision_record_version(s->db, r, source, &err) != 0)
    sb_warn("policy", "cannot record %s version %.12s: %s", r->name, r->sha256, err.msg);
}

sb_policy_engine_t *sb_script_engine(lua_State *L) {
  sb_script_t *s = sb_script_ctx(L);
  if (s->engine) return s->engine;
  sb_error_t err;
  if (!s->policies) {
    sb_policy_limits_t limits = {sb_config()->policy_instruction_budget,
                                 (size_t)sb_config()->policy_memory_limit_mb << 20};
    sb_policy_registry_t *reg = sb_policy_registry_new(sb_config()->policies_dir, &limits);
    sb_policy_registry_set_listener(reg, record_version, s);
    sb_policy_report_t report;
    if (sb_policy_registry_reload(reg, &report, &err) != 0) {
      sb_policy_registry_free(reg);
      luaL_error(L, "sb.policy: %s", err.msg);
    }
    s->policies = reg;
  }
  s->engine = sb_policy_engine_new(s->policies, &err);
  if (!s->engine) luaL_error(L, "sb.policy: %s", err.msg);
  return s->engine;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int sb_script_pcall(lua_State *L, int nargs, int nresults, sb_error_t *err) {
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (rc == LUA_OK) return 0;
  /* Unlike other errors this one keeps its lines: the traceback is for people. */
  err->sqlstate[0] = '\0';
  snprintf(err->msg, sizeof err->msg, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
  lua_pop(L, 1);
  return -1;
}

int sb_script_run_file(sb_script_t *s, const char *path, int argc, char **argv,
                       sb_error_t *err) {
  lua_State *L = s->L;
  lua_createtable(L, argc, 1);
  lua_pushstring(L, path);
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  if (luaL_loadfilex(L, path, "t") != LUA_OK) {
    sb_error_set(err, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
  return sb_script_pcall(L, argc, 0, err);
}

static int sb_json_open(lua_State *L) {
  luaopen_cjson(L);
  return 1;
}

/* sb.pretty: core/lua/pretty.lua, compiled in, given sb.json. Pushes the module. */
static void open_pretty(lua_State *L, int json) {
  const sb_embedded_t *e = sb_embedded_find("pretty");
  if (!e || luaL_loadbufferx(L, e->source, e->len, "=pretty", "t") != LUA_OK) {
    lua_pushnil(L);
    return;
  }
  lua_pushvalue(L, json);
  lua_call(L, 1, 1);
}

sb_script_t *sb_script_new(const char *name, bool dry_run, sb_error_t *err) {
  lua_State *L = luaL_newstate();
  if (!L) {
    sb_error_set(err, "cannot create a Lua state");
    return NULL;
  }
  sb_script_t *s = sb_xcalloc(1, sizeof *s);
  s->L = L;
  s->name = sb_xstrdup(name);
  s->dry_run = dry_run;
  luaL_openlibs(L);
  lua_pushlightuserdata(L, s);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &ctx_key);

  /* Scripts may require modules from scripts/ and the system's Lua paths. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/lib/?.lua;%s", sb_config()->scripts_dir,
                  sb_config()->scripts_dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 2);

  lua_newtable(L); /* sb */
  sb_lua_open_db(L);
  lua_setfield(L, -2, "db");
  sb_json_open(L);
  open_pretty(L, lua_gettop(L));
  lua_setfield(L, -3, "pretty");
  lua_setfield(L, -2, "json");
  sb_lua_open_log(L);
  lua_setfield(L, -2, "log");
  sb_lua_open_events(L);
  lua_setfield(L, -2, "events");
  sb_lua_open_policy(L);
  lua_setfield(L, -2, "policy");
  sb_lua_open_config(L);
  lua_setfield(L, -2, "config");
  sb_lua_open_fleet(L);
  lua_setfield(L, -2, "fleet");
  lua_pushstring(L, SB_VERSION);
  lua_setfield(L, -2, "version");
  lua_pushboolean(L, dry_run);
  lua_setfield(L, -2, "dry_run");
  /* require("sb") works too, for modules under scripts/. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "sb");
  lua_pop(L, 2);
  lua_setglobal(L, "sb");
  return s;
}

void sb_script_free(sb_script_t *s) {
  if (!s) return;
  /* Close the state first: __gc of guards may still need nothing from s. */
  lua_close(s->L);
  if (s->db && s->db->tx_depth > 0) {
    sb_error_t err;
    while (s->db->tx_depth > 0) sb_db_rollback(s->db, &err);
    if (s->dry_run) sb_debug("script", "dry run: rolled back everything %s did", s->name);
  }
  sb_db_free(s->db);
  sb_policy_engine_free(s->engine);
  sb_policy_registry_free(s->policies);
  free(s->name);
  free(s);
}

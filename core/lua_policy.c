/*
 * lua_policy.c: sb.policy, the policies from scripts and the REPL.
 *
 *   sb.policy.call(name, fn, input) -> answer, decision
 *       Runs policies/NAME.lua's fn on a copy of input in the sandboxed policy
 *       engine, under its limits and contract. decision = {policy, fn, sha256, input,
 *       output (both JSON), duration_us}; pass it to sb.events.publish to record it.
 *   sb.policy.reload() -> {loaded = {...}, refused = {{name, error}}, unchanged = n,
 *                          duration_ms = x}
 *   sb.policy.versions() -> {{name, path, sha256, loaded_at, generation}, ...}
 *
 * Failures (unknown policy, a policy error, a broken contract, a refused limit) are Lua
 * errors naming the policy file and line.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "luaconv.h"
#include "script.h"

typedef struct copy_args {
  lua_State *from;
  int idx;
  sb_error_t *err;
  int rc;
} copy_args_t;

/* Runs in the policy state, protected: a memory error there must not escape. */
static int copy_in(lua_State *PL) {
  copy_args_t *a = lua_touserdata(PL, 1);
  a->rc = sb_lua_copy(a->from, a->idx, PL, a->err);
  return a->rc == 0 ? 1 : 0;
}

static int policy_call(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *fn = luaL_checkstring(L, 2);
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  sb_policy_engine_t *eng = sb_script_engine(L);

  /* The input as JSON, for the decision record, before anything else can fail. */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "sb");
  lua_getfield(L, -1, "json");
  lua_getfield(L, -1, "encode");
  lua_pushvalue(L, 3);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK)
    return luaL_error(L, "sb.policy.call: the input is not plain data: %s", lua_tostring(L, -1));
  lua_replace(L, 4);
  lua_settop(L, 4); /* name, fn, input, input_json */

  sb_error_t err;
  sb_policy_call_t call = {.policy = name, .fn = fn};
  lua_State *PL = sb_policy_begin(eng, &call, &err);
  if (!PL) return luaL_error(L, "sb.policy.call: %s", err.msg);
  copy_args_t args = {L, 3, &err, -1};
  lua_pushcfunction(PL, copy_in);
  lua_pushlightuserdata(PL, &args);
  if (lua_pcall(PL, 1, 1, 0) != LUA_OK || args.rc != 0) {
    if (args.rc == 0) sb_error_set(&err, "the input does not fit in the policy memory limit");
    sb_policy_end(eng);
    return luaL_error(L, "sb.policy.call: %s", err.msg);
  }
  if (sb_policy_invoke(eng, &call, &err) != 0) {
    sb_policy_end(eng);
    return luaL_error(L, "sb.policy.call: %s", err.msg);
  }
  size_t out_len = 0;
  char *out_json = sb_lua_json_encode(PL, -1, &out_len, &err);
  if (!out_json) {
    sb_policy_end(eng);
    return luaL_error(L, "sb.policy.call: %s", err.msg);
  }
  void **g = sb_lua_guard(L, out_json, free); /* 5: owns out_json across what may raise */
  if (sb_lua_copy(PL, -1, L, &err) != 0) {
    sb_policy_end(eng);
    return luaL_error(L, "sb.policy.call: %s", err.msg);
  }
  sb_policy_end(eng); /* stack: ..., guard, answer */

  lua_createtable(L, 0, 6); /* decision */
  lua_pushstring(L, name);
  lua_setfield(L, -2, "policy");
  lua_pushstring(L, fn);
  lua_setfield(L, -2, "fn");
  lua_pushstring(L, call.sha256);
  lua_setfield(L, -2, "sha256");
  lua_pushvalue(L, 4);
  lua_setfield(L, -2, "input");
  lua_pushlstring(L, (const char *)*g, out_len);
  lua_setfield(L, -2, "output");
  lua_pushinteger(L, (lua_Integer)(call.duration_ns / 1000));
  lua_setfield(L, -2, "duration_us");
  luaL_setmetatable(L, "sb.policy.decision");
  sb_lua_guard_release(L, 5);
  return 2;
}

static const char *outcome_name(sb_policy_outcome_t o) {
  switch (o) {
  case SB_POLICY_LOADED: return "loaded";
  case SB_POLICY_UNCHANGED: return "unchanged";
  case SB_POLICY_REFUSED: return "refused";
  default: return "removed";
  }
}

static int policy_reload(lua_State *L) {
  sb_script_t *s = sb_script_ctx(L);
  sb_script_engine(L); /* loads the registry on first use */
  sb_policy_report_t *rep = lua_newuserdatauv(L, sizeof *rep, 0);
  sb_error_t err;
  if (sb_policy_registry_reload(s->policies, rep, &err) != 0)
    return luaL_error(L, "sb.policy.reload: %s", err.msg);
  lua_createtable(L, 0, 5);
  lua_newtable(L); /* loaded */
  lua_newtable(L); /* refused */
  lua_newtable(L); /* removed */
  int unchanged = 0;
  for (int i = 0; i < rep->n; i++) {
    const sb_policy_result_t *r = &rep->items[i];
    if (r->outcome == SB_POLICY_UNCHANGED) {
      unchanged++;
      continue;
    }
    int list = r->outcome == SB_POLICY_LOADED ? -3 : r->outcome == SB_POLICY_REFUSED ? -2 : -1;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, r->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, r->sha256);
    lua_setfield(L, -2, "sha256");
    lua_pushstring(L, outcome_name(r->outcome));
    lua_setfield(L, -2, "outcome");
    if (r->error[0]) {
      lua_pushstring(L, r->error);
      lua_setfield(L, -2, "error");
    }
    lua_rawseti(L, list - 1, (lua_Integer)lua_rawlen(L, list - 1) + 1);
  }
  lua_setfield(L, -4, "removed");
  lua_setfield(L, -3, "refused");
  lua_setfield(L, -2, "loaded");
  lua_pushinteger(L, unchanged);
  lua_setfield(L, -2, "unchanged");
  lua_pushnumber(L, rep->duration_ms);
  lua_setfield(L, -2, "duration_ms");
  return 1;
}

static int policy_versions(lua_State *L) {
  sb_script_t *s = sb_script_ctx(L);
  sb_script_engine(L);
  sb_policy_info_t *info = lua_newuserdatauv(L, sizeof *info * SB_POLICY_MAX, 0);
  int n = sb_policy_registry_versions(s->policies, info, SB_POLICY_MAX);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_createtable(L, 0, 5);
    lua_pushstring(L, info[i].name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, info[i].path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, info[i].sha256);
    lua_setfield(L, -2, "sha256");
    lua_pushnumber(L, info[i].loaded_at);
    lua_setfield(L, -2, "loaded_at");
    lua_pushinteger(L, (lua_Integer)info[i].generation);
    lua_setfield(L, -2, "generation");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

void sb_lua_open_policy(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"call", policy_call}, {"reload", policy_reload}, {"versions", policy_versions},
      {NULL, NULL},
  };
  luaL_newmetatable(L, "sb.policy.decision");
  lua_pop(L, 1);
  luaL_newlib(L, fns);
}

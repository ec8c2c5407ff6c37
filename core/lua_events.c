/*
 * lua_events.c: sb.events, writing to the event stream.
 *
 *   sb.events.publish(type, {instance_id=, user_id=, shared_rds_id=, description=,
 *                            payload={...}, actor=, decision=d}) -> event id
 *
 * The event is a row of instance_events, committed with the caller's transaction (or
 * on its own) and announced to every engine's subscribers at commit. `decision`, as
 * returned by sb.policy.call, is recorded in policy_decisions linked to the event, in
 * the same transaction.
 */
#include <lauxlib.h>
#include <string.h>

#include "decision.h"
#include "script.h"

/* opts[name] as text (NULL when absent); must be a string if present. */
static const char *opt_string(lua_State *L, int opts, const char *name) {
  if (opts == 0) return NULL;
  int t = lua_getfield(L, opts, name);
  if (t == LUA_TNIL) return NULL;
  if (t != LUA_TSTRING) luaL_error(L, "sb.events.publish: %s must be a string", name);
  return lua_tostring(L, -1); /* stays on the stack */
}

static int events_publish(lua_State *L) {
  sb_script_t *s = sb_script_ctx(L);
  const char *type = luaL_checkstring(L, 1);
  int opts = lua_isnoneornil(L, 2) ? 0 : (luaL_checktype(L, 2, LUA_TTABLE), 2);
  const char *instance = opt_string(L, opts, "instance_id");
  const char *user = opt_string(L, opts, "user_id");
  const char *server = opt_string(L, opts, "shared_rds_id");
  const char *description = opt_string(L, opts, "description");
  const char *actor = opt_string(L, opts, "actor");
  if (!actor) actor = lua_pushfstring(L, "script:%s", s->name);
  const char *payload = "{}";
  if (opts && lua_getfield(L, opts, "payload") != LUA_TNIL) {
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "sb");
    lua_getfield(L, -1, "json");
    lua_getfield(L, -1, "encode");
    lua_pushvalue(L, -5);
    lua_call(L, 1, 1);
    payload = lua_tostring(L, -1);
  }
  int decision = 0;
  if (opts && lua_getfield(L, opts, "decision") != LUA_TNIL) {
    decision = lua_gettop(L);
    if (!lua_getmetatable(L, decision) ||
        (luaL_getmetatable(L, "sb.policy.decision"), !lua_rawequal(L, -1, -2)))
      luaL_error(L, "sb.events.publish: decision must come from sb.policy.call");
  }
  /* Everything that can raise happens before the transaction opens. */
  sb_decision_t d = {0};
  if (decision) {
    lua_getfield(L, decision, "policy");
    lua_getfield(L, decision, "fn");
    lua_getfield(L, decision, "sha256");
    lua_getfield(L, decision, "input");
    lua_getfield(L, decision, "output");
    lua_getfield(L, decision, "duration_us");
    snprintf(d.policy, sizeof d.policy, "%s", lua_tostring(L, -6));
    snprintf(d.fn, sizeof d.fn, "%s", lua_tostring(L, -5));
    snprintf(d.sha256, sizeof d.sha256, "%s", lua_tostring(L, -4));
    d.input_json = (char *)lua_tostring(L, -3); /* borrowed: stays on the stack */
    d.output_json = (char *)lua_tostring(L, -2);
    d.duration_ns = (uint64_t)lua_tointeger(L, -1) * 1000;
  }

  sb_db_t *db = sb_script_db(L);
  sb_error_t err;
  if (sb_db_begin(db, &err) != 0) luaL_error(L, "sb.events.publish: %s", err.msg);
  const char *params[] = {type, instance, user, server, description, payload, actor};
  PGresult *res = sb_db_query(db,
                              "INSERT INTO instance_events (event_type, instance_id, user_id, "
                              "shared_rds_id, description, payload, actor) "
                              "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                              7, params, &err);
  if (!res) {
    sb_db_rollback(db, NULL);
    luaL_error(L, "sb.events.publish: %s [%s]", err.msg, err.sqlstate);
  }
  char id[64];
  snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  if (decision) {
    if (sb_decision_record(db, &d, id, NULL, &err) != 0) {
      sb_db_rollback(db, NULL);
      luaL_error(L, "sb.events.publish: recording the decision: %s [%s]", err.msg, err.sqlstate);
    }
  }
  if (sb_db_commit(db, &err) != 0) luaL_error(L, "sb.events.publish: %s", err.msg);
  lua_pushstring(L, id);
  return 1;
}

void sb_lua_open_events(lua_State *L) {
  static const luaL_Reg fns[] = {{"publish", events_publish}, {NULL, NULL}};
  luaL_newlib(L, fns);
}

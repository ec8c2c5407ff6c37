/*
 * lua_log.c: sb.log, the engine's log for scripts.
 *
 *   sb.log.debug|info|warn|error(fmt, ...)   string.format(fmt, ...), one line
 *
 * Lines carry the script's name as their component. Never log a secret: what is
 * passed is written as it is.
 */
#include <lauxlib.h>

#include "log.h"
#include "script.h"

static int log_at(lua_State *L, sb_log_level_t level) {
  sb_script_t *s = sb_script_ctx(L);
  if (level < sb_log_get_level()) return 0;
  int n = lua_gettop(L);
  if (n > 1) {
    lua_getglobal(L, "string");
    lua_getfield(L, -1, "format");
    lua_remove(L, -2);
    lua_insert(L, 1);
    lua_call(L, n, 1);
  } else {
    luaL_tolstring(L, 1, NULL);
  }
  sb_log(level, s->name, "%s", lua_tostring(L, -1));
  return 0;
}

static int log_debug(lua_State *L) { return log_at(L, SB_LOG_DEBUG); }
static int log_info(lua_State *L) { return log_at(L, SB_LOG_INFO); }
static int log_warn(lua_State *L) { return log_at(L, SB_LOG_WARN); }
static int log_error(lua_State *L) { return log_at(L, SB_LOG_ERROR); }

void sb_lua_open_log(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"debug", log_debug}, {"info", log_info}, {"warn", log_warn}, {"error", log_error},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
}

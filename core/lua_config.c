/*
 * lua_config.c: sb.config, the effective settings as a read-only table.
 *
 * Secrets (the master key, the password in DATABASE_URL) are not in it: a script
 * that needs the database uses sb.db.
 */
#include <lauxlib.h>

#include "config.h"
#include "script.h"

static int read_only(lua_State *L) { return luaL_error(L, "sb.config is read-only"); }

void sb_lua_open_config(lua_State *L) {
  lua_newtable(L); /* proxy */
  lua_newtable(L); /* values */
  const char *base = (const char *)sb_config();
  for (const sb_config_option_t *o = sb_config_options; o->name; o++) {
    if (o->secret) continue;
    if (o->type == SB_CFG_INT) lua_pushinteger(L, *(const long *)(base + o->offset));
    else if (*(char *const *)(base + o->offset)) lua_pushstring(L, *(char *const *)(base + o->offset));
    else continue;
    lua_setfield(L, -2, o->name);
  }
  lua_pushboolean(L, sb_config()->database_url == NULL);
  lua_setfield(L, -2, "embedded_database");
  lua_newtable(L); /* proxy's metatable */
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, read_only);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
}

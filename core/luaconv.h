/*
 * luaconv.h: plain data between Lua states and JSON.
 *
 * Policies run in their own sandboxed states, so an input built in a script's state
 * is copied into the policy's state and the answer copied back: only plain data
 * crosses (nil, booleans, numbers, strings, tables of those), never a function or a
 * shared table. JSON goes through lua-cjson (linked statically), kept in each state's
 * registry; JSON null becomes nil, as policies see no userdata, and integral numbers
 * become integers (lua-cjson decodes every number as a float).
 */
#ifndef SB_LUACONV_H
#define SB_LUACONV_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Deepest nesting copied or compared; policy data is shallow. */
#define SB_LUA_MAX_DEPTH 64

/* Pushes onto `to` (which may be `from`) a deep copy of the value at idx of `from`.
 * On failure (a function,
 * userdata, cycle, too deep, non-string/number keys) pushes nothing. May raise a
 * memory error in `to`. */
int sb_lua_copy(lua_State *from, int idx, lua_State *to, sb_error_t *err);
/* Deep equality of plain data; an integer never equals a float. */
bool sb_lua_deep_equal(lua_State *L, int a, int b);

/* Loads a private lua-cjson instance into L's registry (once). */
void sb_lua_json_open(lua_State *L);
/* Decodes JSON text and pushes the value; -1 with err (nothing pushed) when invalid. */
int sb_lua_json_decode(lua_State *L, const char *text, size_t len, sb_error_t *err);
/* Encodes the value at idx; returns a malloc'd string (caller frees) or NULL. */
char *sb_lua_json_encode(lua_State *L, int idx, size_t *len, sb_error_t *err);

#endif

/*
 * luaconv.c: copying plain data between states, equality, JSON (see luaconv.h).
 */
#include "luaconv.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <string.h>

#include "util.h"

static int copy_value(lua_State *from, int idx, lua_State *to, int depth, sb_error_t *err) {
  switch (lua_type(from, idx)) {
  case LUA_TNIL: lua_pushnil(to); return 0;
  case LUA_TBOOLEAN: lua_pushboolean(to, lua_toboolean(from, idx)); return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(from, idx)) lua_pushinteger(to, lua_tointeger(from, idx));
    else lua_pushnumber(to, lua_tonumber(from, idx));
    return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(from, idx, &len);
    lua_pushlstring(to, s, len);
    return 0;
  }
  case LUA_TTABLE: break;
  default:
    sb_error_set(err, "a %s cannot cross into a policy (only nil, booleans, numbers, strings "
                      "and tables of them)", luaL_typename(from, idx));
    return -1;
  }
  if (depth >= SB_LUA_MAX_DEPTH) {
    sb_error_set(err, "data nested deeper than %d levels (a cycle?)", SB_LUA_MAX_DEPTH);
    return -1;
  }
  if (!lua_checkstack(from, 3) || !lua_checkstack(to, 3)) {
    sb_error_set(err, "out of stack space copying data");
    return -1;
  }
  idx = lua_absindex(from, idx);
  lua_newtable(to);
  lua_pushnil(from);
  while (lua_next(from, idx) != 0) {
    int kt = lua_type(from, -2);
    int kidx = lua_gettop(from) - 1, vidx = kidx + 1;
    if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
      sb_error_set(err, "table keys must be strings or numbers, got a %s", luaL_typename(from, -2));
      lua_pop(from, 2);
      lua_pop(to, 1);
      return -1;
    }
    if (copy_value(from, kidx, to, depth + 1, err) != 0) {
      lua_pop(from, 2);
      lua_pop(to, 1); /* the new table */
      return -1;
    }
    if (copy_value(from, vidx, to, depth + 1, err) != 0) {
      lua_pop(from, 2);
      lua_pop(to, 2); /* the key and the new table */
      return -1;
    }
    lua_rawset(to, -3);
    lua_pop(from, 1);
  }
  return 0;
}

int sb_lua_copy(lua_State *from, int idx, lua_State *to, sb_error_t *err) {
  if (from != to) return copy_value(from, idx, to, 0, err);
  /* Within one state: build the copy on a scratch thread's stack, then move it. */
  idx = lua_absindex(from, idx);
  lua_State *t = lua_newthread(from); /* ..., thread */
  int rc = copy_value(from, idx, t, 0, err);
  if (rc == 0) lua_xmove(t, from, 1); /* ..., thread, copy */
  if (rc == 0) lua_remove(from, -2);
  else lua_pop(from, 1);
  return rc;
}

static bool equal_at(lua_State *L, int a, int b, int depth) {
  int ta = lua_type(L, a);
  if (ta != lua_type(L, b)) return false;
  if (ta == LUA_TNUMBER) {
    if (lua_isinteger(L, a) != lua_isinteger(L, b)) return false;
    return lua_rawequal(L, a, b);
  }
  if (ta != LUA_TTABLE) return lua_rawequal(L, a, b);
  if (depth >= SB_LUA_MAX_DEPTH || !lua_checkstack(L, 4)) return false;
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  /* Every key of a is in b with an equal value, and b has no other keys. */
  size_t na = 0, nb = 0;
  lua_pushnil(L);
  while (lua_next(L, a) != 0) {
    na++;
    lua_pushvalue(L, -2);
    lua_rawget(L, b);
    bool same = equal_at(L, -1, -2, depth + 1);
    lua_pop(L, 2);
    if (!same) {
      lua_pop(L, 1);
      return false;
    }
  }
  lua_pushnil(L);
  while (lua_next(L, b) != 0) {
    nb++;
    lua_pop(L, 1);
  }
  return na == nb;
}

bool sb_lua_deep_equal(lua_State *L, int a, int b) { return equal_at(L, a, b, 0); }

static const char json_key = 'j'; /* registry key of this state's cjson table */

void sb_lua_json_open(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &json_key) == LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  luaopen_cjson(L);                      /* cjson */
  /* Sparse arrays become objects rather than an encoding error. */
  lua_getfield(L, -1, "encode_sparse_array");
  lua_pushboolean(L, 1);
  lua_call(L, 1, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &json_key);
}

/* JSON has one number type and lua-cjson decodes every number as a float; policies and
 * scripts work in integers (cents, bytes, seconds), so an integral value that fits
 * becomes an integer again. */
static void push_normalized_number(lua_State *L, int idx) {
  lua_Number n = lua_tonumber(L, idx);
  lua_Integer i;
  if (!lua_isinteger(L, idx) && lua_numbertointeger(n, &i) && (lua_Number)i == n)
    lua_pushinteger(L, i);
  else
    lua_pushvalue(L, idx);
}

/* Throughout the table at idx: cjson.null (at null_idx) becomes nil, integral numbers
 * become integers. */
static void normalize(lua_State *L, int idx, int null_idx, int depth) {
  if (depth > SB_LUA_MAX_DEPTH) return;
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (lua_rawequal(L, -1, null_idx)) {
      lua_pushvalue(L, -2);
      lua_pushnil(L);
      lua_rawset(L, idx); /* clearing a field during next() is allowed */
    } else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      lua_pushvalue(L, -2);
      push_normalized_number(L, -2);
      lua_rawset(L, idx); /* assigning an existing field during next() is allowed */
    } else if (lua_type(L, -1) == LUA_TTABLE) {
      normalize(L, -1, null_idx, depth + 1);
    }
    lua_pop(L, 1);
  }
}

int sb_lua_json_decode(lua_State *L, const char *text, size_t len, sb_error_t *err) {
  sb_lua_json_open(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &json_key); /* cjson */
  lua_getfield(L, -1, "null");                   /* cjson, null */
  lua_getfield(L, -2, "decode");                 /* cjson, null, decode */
  lua_pushlstring(L, text, len);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    sb_error_set(err, "invalid JSON: %s", lua_tostring(L, -1));
    lua_pop(L, 3);
    return -1;
  }
  if (lua_rawequal(L, -1, -2)) {
    lua_pop(L, 1);
    lua_pushnil(L);
  } else if (lua_type(L, -1) == LUA_TTABLE) {
    normalize(L, -1, lua_absindex(L, -2), 0);
  } else if (lua_type(L, -1) == LUA_TNUMBER) {
    push_normalized_number(L, -1);
    lua_remove(L, -2);
  }
  lua_replace(L, -3); /* value, null */
  lua_pop(L, 1);
  return 0;
}

char *sb_lua_json_encode(lua_State *L, int idx, size_t *len, sb_error_t *err) {
  idx = lua_absindex(L, idx);
  sb_lua_json_open(L);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &json_key);
  lua_getfield(L, -1, "encode");
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    sb_error_set(err, "cannot encode as JSON: %s", lua_tostring(L, -1));
    lua_pop(L, 2);
    return NULL;
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  char *out = sb_xmalloc(n + 1);
  memcpy(out, s, n + 1);
  if (len) *len = n;
  lua_pop(L, 2);
  return out;
}

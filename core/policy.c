/*
 * policy.c: the policy registry, per-thread engines, sandbox, limits and reload
 * (see policy.h for the model).
 */
#include "policy.h"

#include <ctype.h>
#include <dirent.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "luaconv.h"
#include "policy_contract.h"
#include "util.h"

/* The count hook runs every HOOK_EVERY VM instructions: often enough that a budget is
 * exceeded by at most 0.1 % at the default 1,000,000, rarely enough that the hook
 * itself costs nothing measurable (the per-instruction cost of having a count hook at
 * all is the VM's trap check; see tests/bench/policy_bench.c). */
#define HOOK_EVERY 1000

/* Blocks up to this size come from the engine's free lists (see engine_alloc). */
#define SMALL_MAX 256

/* One accepted version of one policy file. Immutable once made; engines hold a
 * reference while they compile it. */
typedef struct version {
  _Atomic int refs;
  char name[64];
  char path[512];
  char sha256[65];
  char *source;
  size_t len;
  double loaded_at;
  uint64_t generation;
} version_t;

struct sb_policy_registry {
  pthread_mutex_t mu;        /* guards versions[] and n */
  pthread_mutex_t reload_mu; /* one reload at a time */
  char *dir;
  sb_policy_limits_t limits;
  _Atomic uint64_t generation;
  version_t *versions[SB_POLICY_MAX];
  int n;
  bool loaded_once;
  sb_policy_listener_fn listener;
  void *listener_ud;
};

/* A policy compiled in an engine's state. */
typedef struct slot {
  char name[64];
  char path[512];
  char sha256[65];
  int module_ref; /* registry reference of the module table */
} slot_t;

/* Interned answer strings of quotas.check, compared by address on the hot path. */
enum { Q_OK, Q_WARNING, Q_EXCEEDED, Q_NONE, Q_NOTIFY, Q_THROTTLE, Q_BLOCK, Q_STORAGE, Q_API, Q_N };
static const char *const quota_words[Q_N] = {
    "ok", "warning", "exceeded", "none", "notify", "throttle", "block_writes", "storage",
    "api_requests",
};

typedef struct free_block {
  struct free_block *next;
} free_block_t;

/* Keys the hot path sets and reads, kept interned on the stack below base so that
 * building an input costs no string lookups. */
enum { K_QUOTAS, K_USAGE, K_STORAGE_GB, K_API_DAILY, K_STORAGE_BYTES, K_API_TODAY, K_STATUS,
       K_ACTION, K_RESOURCE, K_N };
static const char *const hot_keys[K_N] = {
    "quotas", "usage", "storage_gb", "api_requests_daily", "storage_bytes",
    "api_requests_today", "status", "action", "resource",
};
#define KEY(k) (2 + (k)) /* stack index: 1 is the message handler */
/* The input tables of quotas.check, made once per engine and refilled on every call,
 * so a decision allocates nothing but the policy's answer (policies are pure: they
 * neither keep nor change their input; every field is rewritten before each call). */
#define Q_INPUT (2 + K_N)
#define Q_QUOTAS (3 + K_N)
#define Q_USAGE (4 + K_N)

struct sb_policy_engine {
  sb_policy_registry_t *reg; /* NULL for a scratch engine that validates files */
  sb_policy_limits_t limits;
  lua_State *L;
  size_t mem_used;
  long used;        /* instructions run by the current call, in HOOK_EVERY steps */
  bool over_budget; /* the current call ran out of instructions: no pcall may catch it */
  bool out_of_memory; /* ... or of memory (a caught LUA_ERRMEM re-raised as a string) */
  char where[600];  /* "file:line" last seen by the hook, for memory errors */
  uint64_t generation;
  slot_t slots[SB_POLICY_MAX];
  int nslots;
  int base;         /* stack top when a call began */
  int quota_fn_ref; /* quotas.check, cached for sb_policy_quota_check */
  const char *quota_str[Q_N];
  free_block_t *free_lists[SMALL_MAX / 16 + 1];
  _Atomic unsigned long calls, failed;
  sb_policy_engine_t *next_engine; /* in engines_list */
};


static const char env_mt_key = 'e'; /* registry: metatable of every policy's _ENV */
static const char string_view_key = 's'; /* registry: the policies' string library */

/* Counts for /metrics. Each engine counts its own calls (one writer, so a relaxed load
 * and store, not a locked add on a shared line, which would cost the hot path more than
 * the rest of its bookkeeping); engines that end leave their counts here. */
static _Atomic unsigned long retired_calls, retired_failed;
static pthread_mutex_t engines_mu = PTHREAD_MUTEX_INITIALIZER;
static sb_policy_engine_t *engines_list;

#define BUMP(counter) \
  atomic_store_explicit(&(counter), atomic_load_explicit(&(counter), memory_order_relaxed) + 1, \
                        memory_order_relaxed)

void sb_policy_counters(unsigned long *calls, unsigned long *failed) {
  pthread_mutex_lock(&engines_mu);
  *calls = atomic_load(&retired_calls);
  *failed = atomic_load(&retired_failed);
  for (sb_policy_engine_t *e = engines_list; e; e = e->next_engine) {
    *calls += atomic_load_explicit(&e->calls, memory_order_relaxed);
    *failed += atomic_load_explicit(&e->failed, memory_order_relaxed);
  }
  pthread_mutex_unlock(&engines_mu);
}


/* ---- limits ------------------------------------------------------------------ */

/* Small blocks (most Lua objects: tables, strings, closures) come from per-size free
 * lists owned by the engine, so the short-lived garbage of each call costs no malloc
 * or free; an engine is used by one thread at a time, so the lists need no lock. */
static size_t size_class(size_t n) { return (n + 15) >> 4; }

static void *block_get(sb_policy_engine_t *e, size_t n) {
  if (n > SMALL_MAX) return malloc(n);
  size_t c = size_class(n);
  free_block_t *b = e->free_lists[c];
  if (!b) return malloc(c << 4);
  e->free_lists[c] = b->next;
  return b;
}

static void block_put(sb_policy_engine_t *e, void *p, size_t n) {
  if (n > SMALL_MAX) {
    free(p);
    return;
  }
  free_block_t *b = p;
  size_t c = size_class(n);
  b->next = e->free_lists[c];
  e->free_lists[c] = b;
}

/* The state's allocator: refuses to grow past the memory cap. Lua then collects
 * garbage and retries before it raises a memory error. */
static void *engine_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sb_policy_engine_t *e = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    if (ptr) block_put(e, ptr, old);
    e->mem_used -= old;
    return NULL;
  }
  if (nsize > old && e->mem_used + (nsize - old) > e->limits.memory_limit) return NULL;
  void *p;
  if (!ptr) {
    p = block_get(e, nsize);
  } else if (old > SMALL_MAX && nsize > SMALL_MAX) {
    p = realloc(ptr, nsize);
  } else if (old <= SMALL_MAX && nsize <= SMALL_MAX && size_class(old) == size_class(nsize)) {
    p = ptr; /* the block already has room */
  } else {
    p = block_get(e, nsize);
    if (p) {
      memcpy(p, ptr, old < nsize ? old : nsize);
      block_put(e, ptr, old);
    }
  }
  if (p) e->mem_used = e->mem_used - old + nsize;
  return p;
}

static void free_blocks(sb_policy_engine_t *e) {
  for (size_t c = 0; c <= size_class(SMALL_MAX); c++)
    while (e->free_lists[c]) {
      free_block_t *b = e->free_lists[c];
      e->free_lists[c] = b->next;
      free(b);
    }
}

static sb_policy_engine_t *engine_of(lua_State *L) {
  return *(sb_policy_engine_t **)lua_getextraspace(L);
}

static void on_hook(lua_State *L, lua_Debug *ar) {
  sb_policy_engine_t *e = engine_of(L);
  e->used += HOOK_EVERY;
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
    snprintf(e->where, sizeof e->where, "%s:%d", ar->short_src, ar->currentline);
  if (e->used > e->limits.instruction_budget) {
    e->over_budget = true; /* and the hook raises again every HOOK_EVERY instructions */
    lua_pushfstring(L, "%s: instruction budget of %d exceeded (an endless loop?)", e->where,
                    (int)e->limits.instruction_budget);
    lua_error(L);
  }
}

/* Starts the instruction count of a new call. The count hook stays installed for the
 * life of the state (re-installing it per call would cost more than the hook itself);
 * its phase carries over between calls, so a call may be charged up to HOOK_EVERY
 * instructions early. The position for a memory error is filled in by the hook as the
 * call runs (or by the caller, if it never fired). */
static void reset_limits(sb_policy_engine_t *e) {
  e->used = 0;
  e->over_budget = e->out_of_memory = false;
  e->where[0] = '\0';
}

/* True when msg already starts with "something:123:". */
static bool has_position(const char *msg) {
  const char *colon = strchr(msg, ':');
  if (!colon || !isdigit((unsigned char)colon[1])) return false;
  const char *p = colon + 1;
  while (isdigit((unsigned char)*p)) p++;
  return *p == ':';
}

/* Message handler of every protected call: makes sure the message is a string that
 * starts with file:line. */
static int on_error(lua_State *L) {
  lua_Debug ar;
  char where[600] = "";
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
      snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
      break;
    }
  }
  const char *msg = lua_tostring(L, 1);
  if (msg && has_position(msg)) return 1;
  if (msg) lua_pushfstring(L, "%s%s", where, msg);
  else lua_pushfstring(L, "%serror object is a %s value", where, luaL_typename(L, 1));
  return 1;
}

/* ---- the sandbox --------------------------------------------------------------- */

static int deny_global_write(lua_State *L) {
  return luaL_error(L, "policies may not set globals (tried to set '%s'); use local",
                    lua_tostring(L, 2));
}

static int deny_undefined_read(lua_State *L) {
  return luaL_error(L, "undefined global '%s' (policies see only safe standard functions)",
                    lua_tostring(L, 2));
}

static int deny_library_write(lua_State *L) {
  return luaL_error(L, "the standard libraries are read-only for policies");
}

/* Pushes a read-only view of a table holding the named fields of library lib. */
static void push_library(lua_State *L, const char *lib, const char *const *names) {
  lua_newtable(L); /* proxy */
  lua_newtable(L); /* proxy's metatable */
  lua_newtable(L); /* the copy */
  lua_getglobal(L, lib);
  for (; *names; names++) {
    lua_getfield(L, -1, *names);
    lua_setfield(L, -3, *names);
  }
  lua_pop(L, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, deny_library_write);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2);
}

/* pcall and xpcall for policies: like Lua's, but a call that ran out of its instruction
 * budget or memory stays stopped. Lua's own pcall would hand the budget error to the
 * policy, which could catch it in a loop and never end. */
static int finish_protected(lua_State *L, int status, int first) {
  sb_policy_engine_t *e = engine_of(L);
  if (status == LUA_ERRMEM) e->out_of_memory = true;
  if (status != LUA_OK && (e->over_budget || e->out_of_memory)) return lua_error(L);
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, first);
  return lua_gettop(L) - first + 1;
}

static int sandbox_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushnil(L); /* becomes the status */
  lua_insert(L, 1);
  return finish_protected(L, lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0), 1);
}

static int sandbox_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_copy(L, 2, 1); /* the handler at 1, the function at 2 */
  lua_replace(L, 2);
  return finish_protected(L, lua_pcall(L, n - 2, LUA_MULTRET, 1), 1); /* status over it */
}

/* setmetatable without finalizers: Lua runs __gc with hooks off, out of any budget. */
static int sandbox_setmetatable(lua_State *L) {
  if (lua_istable(L, 2) && lua_getfield(L, 2, "__gc") != LUA_TNIL)
    return luaL_error(L, "policies may not set __gc finalizers");
  lua_settop(L, 2);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, 2, 1);
  return 1;
}

/* Pattern matching runs in C, out of reach of the instruction budget, and backtracks:
 * with q unanchored quantifiers (*, +, -) a subject of n bytes may cost about
 * n^(q+1) steps. A call whose worst case exceeds PATTERN_MAX_STEPS is refused before it
 * starts, so no pattern can stall a worker (policies match short strings). */
#define PATTERN_MAX_STEPS 1e9

/* Which pattern function a guard stands for: find may be plain (argument 4); a '^' does
 * not anchor gmatch. */
enum { PAT_OTHER, PAT_FIND, PAT_GMATCH };

static int sandbox_pattern_fn(lua_State *L) {
  size_t n = 0, plen = 0;
  const char *subject = lua_tolstring(L, 1, &n);
  const char *pat = lua_tolstring(L, 2, &plen);
  int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
  bool plain = kind == PAT_FIND && lua_toboolean(L, 4);
  if (subject && pat && !plain) {
    int q = 0;
    bool anchored = plen > 0 && pat[0] == '^' && kind != PAT_GMATCH;
    for (size_t i = 0; i < plen; i++) {
      if (pat[i] == '%') i++;
      else if (pat[i] == '[') { /* a set: skip to its end */
        i++;
        if (i < plen && pat[i] == '^') i++;
        do {
          if (i < plen && pat[i] == '%') i++;
          i++;
        } while (i < plen && pat[i] != ']');
      } else if (pat[i] == '*' || pat[i] == '+' || pat[i] == '-') q++;
    }
    double steps = pow((double)n + 1, q + (anchored ? 0 : 1));
    if (q > 0 && steps > PATTERN_MAX_STEPS) {
      char msg[160];
      snprintf(msg, sizeof msg, "pattern too costly for a policy (%d repetitions over %zu bytes "
               "may take ~%.0e steps; the limit is %.0e)", q, n, steps, PATTERN_MAX_STEPS);
      return luaL_error(L, "%s", msg);
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* Replaces string.NAME in the library table on top with the guarded version. */
static void guard_pattern_fn(lua_State *L, const char *name, int kind) {
  lua_getfield(L, -1, name);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, sandbox_pattern_fn, 2);
  lua_setfield(L, -2, name);
}

static const char *const base_functions[] = {
    "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen", "select",
    "tonumber", "tostring", "type", "getmetatable", NULL,
};
static const char *const string_functions[] = {
    "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "rep",
    "reverse", "sub", "upper", "pack", "packsize", "unpack", NULL,
};
static const char *const table_functions[] = {
    "concat", "insert", "move", "pack", "remove", "sort", "unpack", NULL,
};
static const char *const math_functions[] = {
    "abs", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log", "max", "maxinteger",
    "min", "mininteger", "modf", "pi", "rad", "sin", "sqrt", "tan", "tointeger", "type", "ult",
    NULL,
};
static const char *const utf8_functions[] = {
    "char", "charpattern", "codes", "codepoint", "len", "offset", NULL,
};
static const char *const os_functions[] = {"time", "date", "clock", NULL};

/* Builds the environment policies see: a read-only base of safe functions, and the
 * metatable that gives each policy file its own _ENV over it. The full standard
 * library stays in the real globals, which no policy can reach. */
static void build_sandbox(lua_State *L) {
  luaL_openlibs(L);
  lua_newtable(L); /* base */
  for (const char *const *f = base_functions; *f; f++) {
    lua_getglobal(L, *f);
    lua_setfield(L, -2, *f);
  }
  lua_pushcfunction(L, sandbox_pcall);
  lua_setfield(L, -2, "pcall");
  lua_pushcfunction(L, sandbox_xpcall);
  lua_setfield(L, -2, "xpcall");
  lua_getglobal(L, "setmetatable");
  lua_pushcclosure(L, sandbox_setmetatable, 1);
  lua_setfield(L, -2, "setmetatable");
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "unpack");
  lua_setfield(L, -3, "unpack");
  lua_pop(L, 1);
  lua_getglobal(L, "string"); /* the pattern functions, guarded (in the real table: the
                                 policy state's own, which only policies use) */
  guard_pattern_fn(L, "find", PAT_FIND);
  guard_pattern_fn(L, "match", PAT_OTHER);
  guard_pattern_fn(L, "gmatch", PAT_GMATCH);
  guard_pattern_fn(L, "gsub", PAT_OTHER);
  lua_pop(L, 1);
  push_library(L, "string", string_functions);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &string_view_key);
  lua_setfield(L, -2, "string");
  push_library(L, "table", table_functions);
  lua_setfield(L, -2, "table");
  push_library(L, "math", math_functions);
  lua_setfield(L, -2, "math");
  push_library(L, "utf8", utf8_functions);
  lua_setfield(L, -2, "utf8");
  push_library(L, "os", os_functions);
  lua_setfield(L, -2, "os");
  lua_pushvalue(L, -1);
  lua_setfield(L, -2, "_G");
  lua_newtable(L); /* base's metatable: reading an undefined name is an error */
  lua_pushcfunction(L, deny_undefined_read);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, deny_global_write);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_setmetatable(L, -2); /* base */

  lua_newtable(L); /* env metatable: lookups fall through to base, writes fail */
  lua_insert(L, -2);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, deny_global_write);
  lua_setfield(L, -2, "__newindex");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &env_mt_key);

  /* Strings share one metatable; hide it so no policy can change string methods, and
   * let s:method() reach only the policies' string functions (no ("").dump). */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &string_view_key);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 2);
}

static sb_policy_engine_t *engine_create(sb_policy_registry_t *reg,
                                         const sb_policy_limits_t *limits, sb_error_t *err) {
  sb_policy_engine_t *e = sb_xcalloc(1, sizeof *e);
  e->reg = reg;
  e->limits = *limits;
  e->quota_fn_ref = LUA_NOREF;
  e->L = lua_newstate(engine_alloc, e);
  if (!e->L) {
    sb_error_set(err, "cannot create a Lua state within the policy memory limit");
    free(e);
    return NULL;
  }
  lua_State *L = e->L;
  *(sb_policy_engine_t **)lua_getextraspace(L) = e;
  lua_gc(L, LUA_GCGEN, 0, 0); /* policies make short-lived garbage */
  build_sandbox(L);
  sb_lua_json_open(L);
  lua_sethook(L, on_hook, LUA_MASKCOUNT, HOOK_EVERY);
  for (int i = 0; i < Q_N; i++) {
    lua_pushstring(L, quota_words[i]);
    e->quota_str[i] = lua_tostring(L, -1);
    luaL_ref(L, LUA_REGISTRYINDEX); /* keeps the interned string alive */
  }
  lua_settop(L, 0);
  lua_pushcfunction(L, on_error); /* stays at index 1: every call's message handler */
  for (int k = 0; k < K_N; k++) lua_pushstring(L, hot_keys[k]); /* at KEY(k) */
  lua_createtable(L, 0, 2); /* Q_INPUT */
  lua_createtable(L, 0, 2); /* Q_QUOTAS */
  lua_createtable(L, 0, 2); /* Q_USAGE */
  e->base = lua_gettop(L);
  return e;
}

/* ---- loading a policy into an engine --------------------------------------------- */

static void format_call_error(sb_policy_engine_t *e, int rc, const char *what,
                              sb_error_t *err) {
  lua_State *L = e->L;
  if (rc == LUA_ERRMEM || e->out_of_memory)
    sb_error_set(err, "%s: memory limit of %zu MiB exceeded%s%s", e->where,
                 e->limits.memory_limit >> 20, what ? " in " : "", what ? what : "");
  else
    sb_error_set(err, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "unknown error");
  /* Release what the failed call allocated before the next one starts. */
  lua_gc(L, LUA_GCCOLLECT);
}

/* Compiles and runs a policy file in e's state; pushes nothing, sets *ref to the
 * module table. Checks that the functions the contract requires are there. */
static int load_module(sb_policy_engine_t *e, const char *name, const char *path,
                       const char *src, size_t len, int *ref, sb_error_t *err) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  char *chunkname = sb_xasprintf("@%s", path);
  int rc = luaL_loadbufferx(L, src, len, chunkname, "t");
  free(chunkname);
  if (rc != LUA_OK) {
    format_call_error(e, rc, NULL, err);
    lua_settop(L, top);
    return -1;
  }
  lua_newtable(L); /* the file's own _ENV */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &env_mt_key);
  lua_setmetatable(L, -2);
  lua_setupvalue(L, -2, 1);
  reset_limits(e);
  rc = lua_pcall(L, 0, 1, 1);
  if (rc != LUA_OK) {
    if (!e->where[0]) snprintf(e->where, sizeof e->where, "%s:1", path);
    format_call_error(e, rc, NULL, err);
    lua_settop(L, top);
    return -1;
  }
  if (!lua_istable(L, -1)) {
    sb_error_set(err, "%s: must return a table of functions (the policy module), returned %s",
                 path, luaL_typename(L, -1));
    lua_settop(L, top);
    return -1;
  }
  const char *const *fns = sb_contract_functions(name);
  for (; fns && *fns; fns++) {
    int t = lua_getfield(L, -1, *fns);
    lua_pop(L, 1);
    if (t != LUA_TFUNCTION) {
      sb_error_set(err, "%s: function %s is missing (the %s contract requires it)", path, *fns,
                   name);
      lua_settop(L, top);
      return -1;
    }
  }
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, top);
  return 0;
}

static slot_t *find_slot(sb_policy_engine_t *e, const char *name) {
  for (int i = 0; i < e->nslots; i++)
    if (strcmp(e->slots[i].name, name) == 0) return &e->slots[i];
  return NULL;
}

/* Installs a loaded module in slot name (replacing the previous one). */
static void install(sb_policy_engine_t *e, const char *name, const char *path,
                    const char *sha256, int ref) {
  slot_t *s = find_slot(e, name);
  if (!s) {
    s = &e->slots[e->nslots++];
    snprintf(s->name, sizeof s->name, "%s", name);
  } else {
    luaL_unref(e->L, LUA_REGISTRYINDEX, s->module_ref);
  }
  snprintf(s->path, sizeof s->path, "%s", path);
  snprintf(s->sha256, sizeof s->sha256, "%s", sha256);
  s->module_ref = ref;
  if (strcmp(name, "quotas") == 0) {
    luaL_unref(e->L, LUA_REGISTRYINDEX, e->quota_fn_ref);
    lua_rawgeti(e->L, LUA_REGISTRYINDEX, ref);
    lua_getfield(e->L, -1, "check");
    e->quota_fn_ref = luaL_ref(e->L, LUA_REGISTRYINDEX);
    lua_pop(e->L, 1);
  }
}

static void version_release(version_t *v) {
  if (v && atomic_fetch_sub(&v->refs, 1) == 1) {
    free(v->source);
    free(v);
  }
}

/* Brings the engine to the registry's current versions. Runs between calls only. */
static void engine_sync(sb_policy_engine_t *e) {
  sb_policy_registry_t *reg = e->reg;
  version_t *snap[SB_POLICY_MAX];
  pthread_mutex_lock(&reg->mu);
  uint64_t gen = atomic_load(&reg->generation);
  int n = reg->n;
  for (int i = 0; i < n; i++) {
    snap[i] = reg->versions[i];
    atomic_fetch_add(&snap[i]->refs, 1);
  }
  pthread_mutex_unlock(&reg->mu);
  for (int i = 0; i < n; i++) {
    version_t *v = snap[i];
    slot_t *s = find_slot(e, v->name);
    if (!s || strcmp(s->sha256, v->sha256) != 0) {
      int ref;
      sb_error_t err;
      if (load_module(e, v->name, v->path, v->source, v->len, &ref, &err) == 0)
        install(e, v->name, v->path, v->sha256, ref);
      else /* validated on another state; only memory pressure gets here */
        sb_error("policy", "cannot load %s version %.12s: %s", v->name, v->sha256, err.msg);
    }
    version_release(v);
  }
  e->generation = gen;
}

sb_policy_engine_t *sb_policy_engine_new(sb_policy_registry_t *reg, sb_error_t *err) {
  sb_policy_engine_t *e = engine_create(reg, &reg->limits, err);
  if (!e) return NULL;
  engine_sync(e);
  pthread_mutex_lock(&engines_mu);
  e->next_engine = engines_list;
  engines_list = e;
  pthread_mutex_unlock(&engines_mu);
  return e;
}

void sb_policy_engine_free(sb_policy_engine_t *e) {
  if (!e) return;
  if (e->reg) {
    pthread_mutex_lock(&engines_mu);
    for (sb_policy_engine_t **p = &engines_list; *p; p = &(*p)->next_engine)
      if (*p == e) {
        *p = e->next_engine;
        break;
      }
    atomic_fetch_add(&retired_calls, atomic_load(&e->calls));
    atomic_fetch_add(&retired_failed, atomic_load(&e->failed));
    pthread_mutex_unlock(&engines_mu);
  }
  lua_close(e->L);
  free_blocks(e);
  free(e);
}

/* ---- calls --------------------------------------------------------------------- */

static void sync_if_stale(sb_policy_engine_t *e) {
  if (e->reg && atomic_load_explicit(&e->reg->generation, memory_order_acquire) != e->generation)
    engine_sync(e);
}

lua_State *sb_policy_begin(sb_policy_engine_t *e, sb_policy_call_t *call, sb_error_t *err) {
  sync_if_stale(e);
  lua_State *L = e->L;
  lua_settop(L, e->base);
  slot_t *s = find_slot(e, call->policy);
  if (!s) {
    sb_error_set(err, "there is no policy named '%s'", call->policy);
    return NULL;
  }
  snprintf(call->sha256, sizeof call->sha256, "%s", s->sha256);
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->module_ref); /* module */
  if (lua_getfield(L, -1, call->fn) != LUA_TFUNCTION) {
    sb_error_set(err, "%s has no function '%s'", s->path, call->fn);
    lua_settop(L, e->base);
    return NULL;
  }
  return L; /* module, fn; the caller pushes the input */
}

/* "path:line" of the function at idx, for errors about its answer. */
static void function_where(lua_State *L, int idx, char *out, size_t len) {
  lua_Debug ar;
  lua_pushvalue(L, idx);
  if (lua_getinfo(L, ">S", &ar)) snprintf(out, len, "%s:%d", ar.short_src, ar.linedefined);
  else snprintf(out, len, "?");
}

/* Stack at entry: ..., fn, input. Calls fn(input) under the limits, keeping input
 * below the answer: leaves ..., fn, input, answer, or pops the answer and fails. */
static int call_fn(sb_policy_engine_t *e, const char *policy, const char *fn,
                   uint64_t *duration_ns, sb_error_t *err) {
  lua_State *L = e->L;
  int fn_idx = lua_gettop(L) - 1;
  lua_pushvalue(L, fn_idx);
  lua_pushvalue(L, fn_idx + 1);
  reset_limits(e);
  uint64_t t0 = duration_ns ? sb_now_ns() : 0;
  int rc = lua_pcall(L, 1, 1, 1);
  if (duration_ns) *duration_ns = sb_now_ns() - t0;
  BUMP(e->calls);
  if (rc == LUA_OK) return 0;
  BUMP(e->failed);
  if (!e->where[0]) function_where(L, fn_idx, e->where, sizeof e->where);
  char what[128];
  snprintf(what, sizeof what, "%s.%s", policy, fn);
  format_call_error(e, rc, what, err);
  lua_pop(L, 1);
  return -1;
}

/* Checks the answer on top (input just below, fn below that) against the contract;
 * pops it and fails on a breach. */
static int check_answer(sb_policy_engine_t *e, const char *policy, const char *fn,
                        sb_error_t *err) {
  lua_State *L = e->L;
  char breach[512] = "";
  if (sb_contract_functions(policy)) {
    if (sb_contract_check(L, policy, fn, -1, -2, breach, sizeof breach) == 0) return 0;
  } else {
    int t = lua_type(L, -1);
    if (t != LUA_TFUNCTION && t != LUA_TUSERDATA && t != LUA_TTHREAD && t != LUA_TLIGHTUSERDATA)
      return 0;
    snprintf(breach, sizeof breach, "it must answer plain data, not a %s", lua_typename(L, t));
  }
  char where[600];
  function_where(L, -3, where, sizeof where);
  sb_error_set(err, "%s: %s.%s answered outside its contract: %s", where, policy, fn, breach);
  lua_pop(L, 1);
  BUMP(e->failed);
  return -1;
}

static int invoke(sb_policy_engine_t *e, const char *policy, const char *fn,
                  uint64_t *duration_ns, sb_error_t *err) {
  if (call_fn(e, policy, fn, duration_ns, err) != 0) return -1;
  return check_answer(e, policy, fn, err);
}

int sb_policy_invoke(sb_policy_engine_t *e, sb_policy_call_t *call, sb_error_t *err) {
  if (lua_gettop(e->L) != e->base + 3) {
    sb_error_set(err, "policy call %s.%s: exactly one input value must be pushed", call->policy,
                 call->fn);
    return -1;
  }
  return invoke(e, call->policy, call->fn, &call->duration_ns, err);
}

void sb_policy_end(sb_policy_engine_t *e) { lua_settop(e->L, e->base); }

int sb_policy_call_json(sb_policy_engine_t *e, sb_policy_call_t *call, const char *input,
                        char **output, sb_error_t *err) {
  *output = NULL;
  lua_State *L = sb_policy_begin(e, call, err);
  if (!L) return -1;
  int rc = -1;
  if (sb_lua_json_decode(L, input, strlen(input), err) != 0) goto done;
  if (sb_policy_invoke(e, call, err) != 0) goto done;
  *output = sb_lua_json_encode(L, -1, NULL, err);
  rc = *output ? 0 : -1;
done:
  sb_policy_end(e);
  return rc;
}

const char *sb_quota_status_name(sb_quota_status_t s) { return quota_words[Q_OK + s]; }
const char *sb_quota_action_name(sb_quota_action_t a) { return quota_words[Q_NONE + a]; }
const char *sb_quota_resource_name(sb_quota_resource_t r) {
  return r == SB_QUOTA_RES_NONE ? NULL : quota_words[Q_STORAGE + r - 1];
}

/* Index of the interned word s among quota_str[from..to], or -1. */
static int word_at(const sb_policy_engine_t *e, lua_State *L, int idx, int from, int to) {
  if (lua_type(L, idx) != LUA_TSTRING) return -1;
  const char *s = lua_tostring(L, idx);
  for (int i = from; i <= to; i++)
    if (s == e->quota_str[i]) return i - from;
  return -1;
}

int sb_policy_quota_check(sb_policy_engine_t *e, const sb_quota_input_t *in,
                          sb_quota_decision_t *out, sb_error_t *err) {
  sync_if_stale(e);
  lua_State *L = e->L;
  if (e->quota_fn_ref == LUA_NOREF) {
    sb_error_set(err, "the quotas policy is not loaded");
    return -1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, e->quota_fn_ref); /* fn */
  lua_pushvalue(L, KEY(K_STORAGE_GB));
  lua_pushinteger(L, in->storage_gb);
  lua_rawset(L, Q_QUOTAS);
  lua_pushvalue(L, KEY(K_API_DAILY));
  lua_pushinteger(L, in->api_requests_daily);
  lua_rawset(L, Q_QUOTAS);
  lua_pushvalue(L, KEY(K_STORAGE_BYTES));
  lua_pushinteger(L, in->storage_bytes);
  lua_rawset(L, Q_USAGE);
  lua_pushvalue(L, KEY(K_API_TODAY));
  lua_pushinteger(L, in->api_requests_today);
  lua_rawset(L, Q_USAGE);
  lua_pushvalue(L, KEY(K_QUOTAS));
  lua_pushvalue(L, Q_QUOTAS);
  lua_rawset(L, Q_INPUT);
  lua_pushvalue(L, KEY(K_USAGE));
  lua_pushvalue(L, Q_USAGE);
  lua_rawset(L, Q_INPUT);
  lua_pushvalue(L, Q_INPUT); /* fn, input */
  if (call_fn(e, "quotas", "check", NULL, err) != 0) {
    lua_settop(L, e->base);
    return -1;
  }
  /* The contract, checked by interned address: a valid answer is a table with status,
   * action and (unless ok) resource. The fields the core reads are checked on every
   * call; that no other field is present is checked where it costs nothing per
   * decision, on every example at reload and on every JSON call. Anything odd goes
   * through the full check, which says what is wrong. */
  int st = -1, ac = -1, rs = -1;
  if (lua_type(L, -1) == LUA_TTABLE) {
    lua_pushvalue(L, KEY(K_STATUS));
    lua_rawget(L, -2);
    lua_pushvalue(L, KEY(K_ACTION));
    lua_rawget(L, -3);
    lua_pushvalue(L, KEY(K_RESOURCE));
    lua_rawget(L, -4);
    st = word_at(e, L, -3, Q_OK, Q_EXCEEDED);
    ac = word_at(e, L, -2, Q_NONE, Q_BLOCK);
    rs = word_at(e, L, -1, Q_STORAGE, Q_API);
    bool no_resource = lua_isnil(L, -1);
    lua_pop(L, 3);
    if (st == 0 ? !no_resource : rs < 0) st = -1;
  }
  if (st < 0 || ac < 0) {
    if (check_answer(e, "quotas", "check", err) == 0) {
      sb_error_set(err, "quotas.check answered outside its contract");
    }
    lua_settop(L, e->base);
    return -1;
  }
  out->status = (sb_quota_status_t)st;
  out->action = (sb_quota_action_t)ac;
  out->resource = rs < 0 ? SB_QUOTA_RES_NONE : (sb_quota_resource_t)(rs + 1);
  lua_settop(L, e->base);
  return 0;
}

/* ---- validating a file ------------------------------------------------------------ */

/* Runs every example of the module at mod_idx; -1 with the first failure. */
static int run_examples(sb_policy_engine_t *e, const char *name, const char *path, int mod_idx,
                        sb_error_t *err) {
  lua_State *L = e->L;
  int top = lua_gettop(L);
  int t = lua_getfield(L, mod_idx, "examples");
  if (t == LUA_TNIL && !sb_contract_functions(name)) {
    lua_settop(L, top);
    return 0; /* an operator's own policy may go without */
  }
  if (t != LUA_TTABLE || lua_rawlen(L, -1) == 0) {
    sb_error_set(err, "%s: needs M.examples, a list of {fn=, input=, output=} cases the new "
                      "version must pass before it is accepted", path);
    lua_settop(L, top);
    return -1;
  }
  int examples = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, examples);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_settop(L, examples);
    if (lua_geti(L, examples, i) != LUA_TTABLE) {
      sb_error_set(err, "%s: examples[%lld] must be a table", path, (long long)i);
      break;
    }
    int ex = lua_gettop(L);
    if (lua_getfield(L, ex, "fn") != LUA_TSTRING) {
      sb_error_set(err, "%s: examples[%lld].fn must name a function", path, (long long)i);
      break;
    }
    const char *fn = lua_tostring(L, -1);
    if (lua_getfield(L, mod_idx, fn) != LUA_TFUNCTION) {
      sb_error_set(err, "%s: examples[%lld] names a missing function '%s'", path, (long long)i, fn);
      break;
    }
    lua_getfield(L, ex, "input");
    /* A copy, so a policy that changes its input cannot change the example. */
    if (sb_lua_copy(L, -1, L, err) != 0) {
      sb_error_prefix(err, "%s: examples[%lld].input", path, (long long)i);
      break;
    }
    lua_remove(L, -2); /* ex, fnname, fn, input copy */
    if (invoke(e, name, fn, NULL, err) != 0) {
      sb_error_prefix(err, "example %lld", (long long)i);
      break;
    }
    lua_getfield(L, ex, "output"); /* ..., answer, expected */
    if (!sb_lua_deep_equal(L, -1, -2)) {
      char where[600];
      function_where(L, ex + 2, where, sizeof where);
      char *got = sb_lua_json_encode(L, -2, NULL, NULL);
      char *want = sb_lua_json_encode(L, -1, NULL, NULL);
      bool same_text = got && want && strcmp(got, want) == 0;
      sb_error_set(err, "%s: example %lld (%s) answered %s, expected %s%s", where, (long long)i,
                   fn, got ? got : "?", want ? want : "?",
                   same_text ? " (an integer where a float is expected, or the reverse)" : "");
      free(got);
      free(want);
      break;
    }
    if (i == n) {
      lua_settop(L, top);
      return 0;
    }
  }
  lua_settop(L, top);
  return -1;
}

/* Compiles and checks one file in a scratch engine. */
static int validate(sb_policy_engine_t *scratch, const char *name, const char *path,
                    const char *src, size_t len, sb_error_t *err) {
  int ref;
  if (load_module(scratch, name, path, src, len, &ref, err) != 0) return -1;
  lua_rawgeti(scratch->L, LUA_REGISTRYINDEX, ref);
  int rc = run_examples(scratch, name, path, lua_gettop(scratch->L), err);
  lua_pop(scratch->L, 1);
  luaL_unref(scratch->L, LUA_REGISTRYINDEX, ref);
  return rc;
}

/* ---- the registry ------------------------------------------------------------------ */

sb_policy_registry_t *sb_policy_registry_new(const char *dir, const sb_policy_limits_t *limits) {
  sb_policy_registry_t *reg = sb_xcalloc(1, sizeof *reg);
  pthread_mutex_init(&reg->mu, NULL);
  pthread_mutex_init(&reg->reload_mu, NULL);
  reg->dir = sb_xstrdup(dir);
  reg->limits = *limits;
  return reg;
}

void sb_policy_registry_free(sb_policy_registry_t *reg) {
  if (!reg) return;
  for (int i = 0; i < reg->n; i++) version_release(reg->versions[i]);
  pthread_mutex_destroy(&reg->mu);
  pthread_mutex_destroy(&reg->reload_mu);
  free(reg->dir);
  free(reg);
}

void sb_policy_registry_set_listener(sb_policy_registry_t *reg, sb_policy_listener_fn fn,
                                     void *ud) {
  reg->listener = fn;
  reg->listener_ud = ud;
}

const char *sb_policy_registry_dir(const sb_policy_registry_t *reg) { return reg->dir; }

uint64_t sb_policy_registry_generation(sb_policy_registry_t *reg) {
  return atomic_load(&reg->generation);
}

static bool policy_file_name(const char *file, char *name, size_t len) {
  size_t n = strlen(file);
  if (n < 5 || n - 4 >= len || strcmp(file + n - 4, ".lua") != 0) return false;
  if (!islower((unsigned char)file[0])) return false;
  for (size_t i = 0; i < n - 4; i++)
    if (!islower((unsigned char)file[i]) && !isdigit((unsigned char)file[i]) && file[i] != '_')
      return false;
  memcpy(name, file, n - 4);
  name[n - 4] = '\0';
  return true;
}

typedef struct candidate {
  char name[64];
  char path[512];
  char *source;
  size_t len;
} candidate_t;

static int scan_dir(const char *dir, candidate_t *out, int max, sb_error_t *err) {
  DIR *d = opendir(dir);
  if (!d) {
    sb_error_set(err, "cannot open the policies directory %s", dir);
    return -1;
  }
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    char name[64];
    if (!policy_file_name(ent->d_name, name, sizeof name)) continue;
    if (n == max) {
      sb_error_set(err, "%s holds more than %d policies", dir, max);
      closedir(d);
      for (int i = 0; i < n; i++) free(out[i].source);
      return -1;
    }
    candidate_t *c = &out[n++];
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->path, sizeof c->path, "%s/%s", dir, ent->d_name);
    sb_error_t rerr;
    c->source = sb_read_file(c->path, &c->len, &rerr);
  }
  closedir(d);
  return n;
}

static version_t *current_version(sb_policy_registry_t *reg, const char *name) {
  for (int i = 0; i < reg->n; i++)
    if (strcmp(reg->versions[i]->name, name) == 0) return reg->versions[i];
  return NULL;
}

static sb_policy_result_t *report_add(sb_policy_report_t *rep, const char *name, const char *path,
                                      sb_policy_outcome_t outcome) {
  sb_policy_result_t *r = &rep->items[rep->n++];
  memset(r, 0, sizeof *r);
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->path, sizeof r->path, "%s", path);
  r->outcome = outcome;
  if (outcome == SB_POLICY_LOADED) rep->loaded++;
  if (outcome == SB_POLICY_REFUSED) rep->refused++;
  return r;
}

int sb_policy_registry_reload(sb_policy_registry_t *reg, sb_policy_report_t *rep,
                              sb_error_t *err) {
  memset(rep, 0, sizeof *rep);
  pthread_mutex_lock(&reg->reload_mu);
  uint64_t t0 = sb_now_ns();
  candidate_t files[SB_POLICY_MAX];
  int n = scan_dir(reg->dir, files, SB_POLICY_MAX, err);
  if (n < 0) {
    pthread_mutex_unlock(&reg->reload_mu);
    return -1;
  }
  sb_policy_engine_t *scratch = engine_create(NULL, &reg->limits, err);
  if (!scratch) {
    for (int i = 0; i < n; i++) free(files[i].source);
    pthread_mutex_unlock(&reg->reload_mu);
    return -1;
  }
  version_t *fresh[SB_POLICY_MAX] = {0};
  for (int i = 0; i < n; i++) {
    candidate_t *c = &files[i];
    char sha[65] = "";
    if (c->source) sb_sha256_hex(c->source, c->len, sha);
    pthread_mutex_lock(&reg->mu);
    version_t *cur = current_version(reg, c->name);
    bool same = cur && strcmp(cur->sha256, sha) == 0;
    pthread_mutex_unlock(&reg->mu);
    if (same) {
      snprintf(report_add(rep, c->name, c->path, SB_POLICY_UNCHANGED)->sha256, 65, "%s", sha);
      continue;
    }
    sb_error_t verr;
    if (!c->source) sb_error_set(&verr, "%s: cannot be read", c->path);
    if (!c->source || validate(scratch, c->name, c->path, c->source, c->len, &verr) != 0) {
      sb_policy_result_t *r = report_add(rep, c->name, c->path, SB_POLICY_REFUSED);
      snprintf(r->sha256, sizeof r->sha256, "%s", sha);
      snprintf(r->error, sizeof r->error, "%s", verr.msg);
      continue;
    }
    version_t *v = sb_xcalloc(1, sizeof *v);
    atomic_init(&v->refs, 1);
    snprintf(v->name, sizeof v->name, "%s", c->name);
    snprintf(v->path, sizeof v->path, "%s", c->path);
    snprintf(v->sha256, sizeof v->sha256, "%s", sha);
    v->source = c->source;
    v->len = c->len;
    c->source = NULL;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    v->loaded_at = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    fresh[i] = v;
    snprintf(report_add(rep, c->name, c->path, SB_POLICY_LOADED)->sha256, 65, "%s", sha);
  }
  sb_policy_engine_free(scratch);

  /* A policy whose file vanished keeps serving: the core cannot run without it. */
  pthread_mutex_lock(&reg->mu);
  for (int j = 0; j < reg->n; j++) {
    bool present = false;
    for (int i = 0; i < n && !present; i++) present = strcmp(files[i].name, reg->versions[j]->name) == 0;
    if (!present) {
      sb_policy_result_t *r = report_add(rep, reg->versions[j]->name, reg->versions[j]->path,
                                         SB_POLICY_REMOVED);
      snprintf(r->sha256, sizeof r->sha256, "%s", reg->versions[j]->sha256);
      snprintf(r->error, sizeof r->error, "%s is gone; version %.12s keeps serving",
               reg->versions[j]->path, reg->versions[j]->sha256);
    }
  }
  pthread_mutex_unlock(&reg->mu);

  int rc = 0;
  if (!reg->loaded_once) {
    /* Starting up: every policy the core needs must be there and sound. */
    for (const char *const *p = sb_contract_required_policies; *p && rc == 0; p++) {
      bool ok = false;
      for (int i = 0; i < n; i++) ok = ok || (fresh[i] && strcmp(fresh[i]->name, *p) == 0);
      if (!ok) {
        const char *why = "the file is missing";
        for (int k = 0; k < rep->n; k++)
          if (strcmp(rep->items[k].name, *p) == 0 && rep->items[k].error[0]) why = rep->items[k].error;
        sb_error_set(err, "policy %s cannot be loaded from %s: %s", *p, reg->dir, why);
        rc = -1;
      }
    }
  }
  if (rc == 0 && rep->loaded > 0) {
    pthread_mutex_lock(&reg->mu);
    uint64_t gen = atomic_load(&reg->generation) + 1;
    for (int i = 0; i < n; i++) {
      if (!fresh[i]) continue;
      fresh[i]->generation = gen;
      version_t **slot = NULL;
      for (int j = 0; j < reg->n; j++)
        if (strcmp(reg->versions[j]->name, fresh[i]->name) == 0) slot = &reg->versions[j];
      if (slot) {
        version_release(*slot);
        *slot = fresh[i];
      } else {
        reg->versions[reg->n++] = fresh[i];
      }
      fresh[i] = NULL;
    }
    atomic_store_explicit(&reg->generation, gen, memory_order_release);
    pthread_mutex_unlock(&reg->mu);
  }
  if (rc == 0) reg->loaded_once = true;
  for (int i = 0; i < n; i++) version_release(fresh[i]);
  rep->duration_ms = (double)(sb_now_ns() - t0) / 1e6;

  if (reg->listener) {
    for (int k = 0; k < rep->n; k++) {
      const sb_policy_result_t *r = &rep->items[k];
      if (r->outcome != SB_POLICY_LOADED && r->outcome != SB_POLICY_REFUSED) continue;
      const char *src = NULL;
      for (int i = 0; i < n; i++)
        if (strcmp(files[i].name, r->name) == 0) src = files[i].source;
      if (!src && r->outcome == SB_POLICY_LOADED) {
        pthread_mutex_lock(&reg->mu);
        version_t *v = current_version(reg, r->name);
        if (v) atomic_fetch_add(&v->refs, 1);
        pthread_mutex_unlock(&reg->mu);
        if (v) reg->listener(reg->listener_ud, r, v->source);
        version_release(v);
      } else {
        reg->listener(reg->listener_ud, r, src ? src : "");
      }
    }
  }
  for (int i = 0; i < n; i++) free(files[i].source);
  pthread_mutex_unlock(&reg->reload_mu);
  return rc;
}

int sb_policy_registry_versions(sb_policy_registry_t *reg, sb_policy_info_t *out, int max) {
  pthread_mutex_lock(&reg->mu);
  int n = reg->n < max ? reg->n : max;
  for (int i = 0; i < n; i++) {
    version_t *v = reg->versions[i];
    snprintf(out[i].name, sizeof out[i].name, "%s", v->name);
    snprintf(out[i].path, sizeof out[i].path, "%s", v->path);
    snprintf(out[i].sha256, sizeof out[i].sha256, "%s", v->sha256);
    out[i].loaded_at = v->loaded_at;
    out[i].generation = v->generation;
  }
  pthread_mutex_unlock(&reg->mu);
  return n;
}

char *sb_policy_registry_source(sb_policy_registry_t *reg, const char *name, const char *sha256) {
  char *out = NULL;
  pthread_mutex_lock(&reg->mu);
  version_t *v = current_version(reg, name);
  if (v && strcmp(v->sha256, sha256) == 0) {
    out = sb_xmalloc(v->len + 1);
    memcpy(out, v->source, v->len);
    out[v->len] = '\0';
  }
  pthread_mutex_unlock(&reg->mu);
  return out;
}

int sb_policy_check_dir(const char *dir, const sb_policy_limits_t *limits,
                        sb_policy_report_t *rep, sb_error_t *err) {
  sb_policy_registry_t *reg = sb_policy_registry_new(dir, limits);
  sb_error_t first;
  int rc = sb_policy_registry_reload(reg, rep, &first);
  sb_policy_registry_free(reg);
  if (rc != 0 && rep->refused == 0 && rep->n == 0) {
    *err = first; /* the directory itself is unusable */
    return -1;
  }
  if (rc != 0 && rep->refused == 0) {
    /* Nothing broken, but a required policy is missing: report it as refused. */
    sb_policy_result_t *r = &rep->items[rep->n < SB_POLICY_MAX ? rep->n++ : SB_POLICY_MAX - 1];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "(missing)");
    snprintf(r->path, sizeof r->path, "%s", dir);
    r->outcome = SB_POLICY_REFUSED;
    snprintf(r->error, sizeof r->error, "%s", first.msg);
    rep->refused++;
  }
  return rep->refused;
}

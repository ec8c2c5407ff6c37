/*
 * script.h: the Lua state of operator scripts and the REPL, with the full sb API.
 *
 * Unlike policies, scripts are trusted operator code: all standard libraries, require
 * of Lua and native modules, the sb module tree (core/lua_*.c). The sb_script_t is the
 * per-state context every binding reaches through the registry (sb_script_ctx), as
 * Redis keeps its per-call context: each binding checks it before doing anything.
 *
 * The management database is connected on first use. In dry-run mode the whole
 * session runs in one transaction that is rolled back when the script ends; nested
 * sb.db.transaction calls become savepoints.
 */
#ifndef SB_SCRIPT_H
#define SB_SCRIPT_H

#include <lua.h>
#include <stdbool.h>

#include "db.h"
#include "error.h"
#include "policy.h"

typedef struct sb_script {
  lua_State *L;
  char *name;             /* shown in logs and as the actor of events */
  bool dry_run;
  sb_db_t *db;            /* NULL until first use */
  sb_policy_registry_t *policies; /* NULL until first use */
  sb_policy_engine_t *engine;
} sb_script_t;

sb_script_t *sb_script_new(const char *name, bool dry_run, sb_error_t *err);
/* Rolls back a dry run, closes everything. */
void sb_script_free(sb_script_t *s);

/* The context of L; raises a Lua error when L is not a script state. */
sb_script_t *sb_script_ctx(lua_State *L);
/* The database connection, connecting (and, dry run, opening the transaction) on first
 * use; raises a Lua error on failure. */
sb_db_t *sb_script_db(lua_State *L);
/* The policy engine, loading policies on first use; raises a Lua error on failure. */
sb_policy_engine_t *sb_script_engine(lua_State *L);

/* Runs a chunk under a traceback handler: 0, or -1 with the message (file:line and a
 * traceback) in err. */
int sb_script_pcall(lua_State *L, int nargs, int nresults, sb_error_t *err);
/* Loads and runs path with `arg` set as lua.c does (arg[0] = path). */
int sb_script_run_file(sb_script_t *s, const char *path, int argc, char **argv, sb_error_t *err);

/* Openers of the sb sub-tables; each pushes its table. */
void sb_lua_open_db(lua_State *L);
void sb_lua_open_log(lua_State *L);
void sb_lua_open_events(lua_State *L);
void sb_lua_open_policy(lua_State *L);
void sb_lua_open_config(lua_State *L);
void sb_lua_open_fleet(lua_State *L);

/* A userdata owning C memory, freed by free_fn when collected or released: lets a
 * binding keep malloc'd data across calls that may raise. Pushes the userdata. */
typedef void (*sb_lua_free_fn)(void *);
void **sb_lua_guard(lua_State *L, void *ptr, sb_lua_free_fn free_fn);
/* Frees now what the guard at idx owns. */
void sb_lua_guard_release(lua_State *L, int idx);

#endif

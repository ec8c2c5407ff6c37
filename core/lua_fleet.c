/*
 * lua_fleet.c: sb.fleet, the fleet for scripts and the REPL.
 *
 *   sb.fleet.servers()                       -> rows of shared and dedicated servers
 *   sb.fleet.provision{user_id=, plan=, name=, subdomain=, region=}
 *                                            -> {instance_id, job_id, event_id, status,
 *                                                shared_rds_id, opening_server, plan}
 *   sb.fleet.suspend(id [, reason]) / resume(id) / deprovision(id) -> job id
 *   sb.fleet.credentials(id)                 -> the tenant's connection URL
 *   sb.fleet.jobs{status=, kind=, instance_id=, limit=} -> rows
 *   sb.fleet.work{max_jobs=, until_idle=}    -> {done=, failed=, waiting=}
 *
 * Requests go through the same code as the HTTP API (core/provision.c): policies
 * decide, the request is one transaction, a job does the work. Under --dry-run the
 * whole session is rolled back, so a request shows its plan (the decisions it took,
 * in `plan`, beside the ids and status it would have had) without doing anything. work() runs queued
 * jobs in this process, as an engine would, for operators without a running engine.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "jobs.h"
#include "mgmtdb.h"
#include "provision.h"
#include "script.h"
#include "util.h"

/* Per-state resources, freed with the state. */
typedef struct fleet_state {
  sb_keyring_t *keys;
  sb_fleet_driver_t *driver;
} fleet_state_t;

static const char state_key = 'f';

static int state_gc(lua_State *L) {
  fleet_state_t *st = lua_touserdata(L, 1);
  sb_keyring_free(st->keys);
  if (st->driver) st->driver->free(st->driver);
  st->keys = NULL;
  st->driver = NULL;
  return 0;
}

static fleet_state_t *fleet_state(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key) == LUA_TUSERDATA) {
    fleet_state_t *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return st;
  }
  lua_pop(L, 1);
  fleet_state_t *st = lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  lua_newtable(L);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  return st;
}

/* The context for a request; raises on failure. */
static sb_fleet_ctx_t context(lua_State *L, bool with_driver) {
  fleet_state_t *st = fleet_state(L);
  sb_error_t err;
  if (!st->keys && !(st->keys = sb_keyring_load(&err))) luaL_error(L, "sb.fleet: %s", err.msg);
  if (with_driver && !st->driver && !(st->driver = sb_fleet_driver_open(&err)))
    luaL_error(L, "sb.fleet: %s", err.msg);
  sb_script_t *s = sb_script_ctx(L);
  sb_fleet_ctx_t ctx = {sb_script_db(L), sb_script_engine(L), st->driver, st->keys, NULL};
  lua_pushfstring(L, "script:%s", s->name);
  ctx.actor = lua_tostring(L, -1); /* stays on the stack for the call */
  return ctx;
}

static int raise_err(lua_State *L, const char *what, const sb_error_t *err) {
  return luaL_error(L, "sb.fleet.%s: %s", what, err->msg);
}

/* Runs sb.db.query(sql, ...) and returns its rows. */
static int query(lua_State *L, const char *sql, int nargs) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "sb");
  lua_getfield(L, -1, "db");
  lua_getfield(L, -1, "query");
  lua_replace(L, -4);
  lua_pop(L, 2);
  lua_pushstring(L, sql);
  for (int i = 0; i < nargs; i++) lua_pushvalue(L, -2 - nargs);
  lua_call(L, nargs + 1, 1);
  return 1;
}

static int fleet_servers(lua_State *L) {
  return query(L,
               "SELECT id, rds_instance_id, 'shared' AS tier, status, host, port, pooler_port, "
               "current_databases, max_databases, "
               "round(100.0 * current_databases / max_databases, 2) AS usage_percentage, "
               "storage_used_gb, storage_total_gb, last_health_check_at, last_health_error "
               "FROM shared_rds_instances "
               "UNION ALL SELECT id, rds_instance_id, 'dedicated', status, host, port, NULL, "
               "NULL, NULL, NULL, storage_used_gb, storage_total_gb, last_health_check_at, "
               "last_health_error FROM dedicated_rds_instances ORDER BY 3 DESC, 2",
               0);
}

static const char *field(lua_State *L, int t, const char *k) {
  int type = lua_getfield(L, t, k);
  if (type == LUA_TNIL) return NULL;
  if (type != LUA_TSTRING) luaL_error(L, "sb.fleet.provision: %s must be a string", k);
  size_t len;
  const char *s = lua_tolstring(L, -1, &len);
  /* A NUL would cut the string short in C: another value than the one given. */
  if (strlen(s) != len) luaL_error(L, "sb.fleet.provision: %s holds a NUL byte", k);
  return s;
}

static int fleet_provision(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  sb_provision_request_t req = {field(L, 1, "user_id"), field(L, 1, "plan"), field(L, 1, "name"),
                                field(L, 1, "subdomain"), field(L, 1, "region")};
  sb_fleet_ctx_t ctx = context(L, false);
  sb_provision_result_t out;
  sb_error_t err;
  if (sb_provision_request(&ctx, &req, &out, &err) != 0) return raise_err(L, "provision", &err);
  lua_createtable(L, 0, 7);
  lua_pushstring(L, out.instance_id);
  lua_setfield(L, -2, "instance_id");
  lua_pushstring(L, out.job_id);
  lua_setfield(L, -2, "job_id");
  lua_pushstring(L, out.event_id);
  lua_setfield(L, -2, "event_id");
  lua_pushstring(L, out.status);
  lua_setfield(L, -2, "status");
  if (out.shared_rds_id[0]) {
    lua_pushstring(L, out.shared_rds_id);
    lua_setfield(L, -2, "shared_rds_id");
  }
  lua_pushboolean(L, out.opening_server);
  lua_setfield(L, -2, "opening_server");
  if (sb_script_ctx(L)->dry_run) {
    /* The plan: the decisions taken, as the record would keep them. */
    lua_pushstring(L, out.event_id);
    query(L, "SELECT policy, function, version_sha256, output FROM policy_decisions "
             "WHERE event_id = $1 ORDER BY created_at", 1);
    lua_remove(L, -2);
    lua_setfield(L, -2, "plan");
  }
  return 1;
}

typedef int (*lifecycle_fn)(sb_fleet_ctx_t *, const char *, char *, sb_error_t *);

static int lifecycle(lua_State *L, const char *what, lifecycle_fn fn) {
  const char *id = luaL_checkstring(L, 1);
  sb_fleet_ctx_t ctx = context(L, false);
  char job[37];
  sb_error_t err;
  if (fn(&ctx, id, job, &err) != 0) return raise_err(L, what, &err);
  lua_pushstring(L, job);
  return 1;
}

static int fleet_suspend(lua_State *L) {
  const char *id = luaL_checkstring(L, 1);
  const char *reason = luaL_optstring(L, 2, NULL);
  sb_fleet_ctx_t ctx = context(L, false);
  char job[37];
  sb_error_t err;
  if (sb_instance_suspend(&ctx, id, reason, job, &err) != 0) return raise_err(L, "suspend", &err);
  lua_pushstring(L, job);
  return 1;
}

static int fleet_resume(lua_State *L) { return lifecycle(L, "resume", sb_instance_resume); }
static int fleet_deprovision(lua_State *L) {
  return lifecycle(L, "deprovision", sb_instance_deprovision);
}

static int fleet_credentials(lua_State *L) {
  const char *id = luaL_checkstring(L, 1);
  sb_fleet_ctx_t ctx = context(L, false);
  sb_error_t err;
  char *url = sb_instance_credentials(&ctx, id, &err);
  if (!url) return raise_err(L, "credentials", &err);
  void **g = sb_lua_guard(L, url, free);
  lua_pushstring(L, (const char *)*g);
  explicit_bzero(*g, strlen(*g));
  sb_lua_guard_release(L, -2);
  return 1;
}

static int fleet_jobs(lua_State *L) {
  int opts = lua_istable(L, 1) ? 1 : 0;
  const char *status = opts ? (lua_getfield(L, 1, "status"), lua_tostring(L, -1)) : NULL;
  const char *kind = opts ? (lua_getfield(L, 1, "kind"), lua_tostring(L, -1)) : NULL;
  const char *instance = opts ? (lua_getfield(L, 1, "instance_id"), lua_tostring(L, -1)) : NULL;
  lua_Integer limit = opts ? (lua_getfield(L, 1, "limit"), luaL_optinteger(L, -1, 50)) : 50;
  lua_settop(L, 0);
  if (status) lua_pushstring(L, status); else lua_pushnil(L);
  if (kind) lua_pushstring(L, kind); else lua_pushnil(L);
  if (instance) lua_pushstring(L, instance); else lua_pushnil(L);
  lua_pushinteger(L, limit);
  return query(L,
               "SELECT id, kind, status, attempts, max_attempts, instance_id, run_at, "
               "last_error, created_at, finished_at FROM jobs "
               "WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2) "
               "AND ($3::uuid IS NULL OR instance_id = $3) ORDER BY created_at DESC LIMIT $4",
               4);
}

/* Runs queued jobs here, registered as an engine for the duration (so the jobs'
 * owner is alive exactly while this runs). */
static int fleet_work(lua_State *L) {
  int max_jobs = 1000;
  bool until_idle = true;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "max_jobs");
    max_jobs = (int)luaL_optinteger(L, -1, 1000);
    lua_getfield(L, 1, "until_idle");
    if (!lua_isnil(L, -1)) until_idle = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  sb_script_t *s = sb_script_ctx(L);
  if (s->dry_run) return luaL_error(L, "sb.fleet.work: jobs act on servers; not in a dry run");
  sb_fleet_ctx_t ctx = context(L, true);
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) return raise_err(L, "work", &err);
  sb_db_t *lockdb = sb_db_connect(url, NULL, "solobase script engine", &err);
  explicit_bzero(url, strlen(url));
  free(url);
  long engine_id;
  if (!lockdb || sb_engine_register(lockdb, &engine_id, &err) != 0) {
    sb_db_free(lockdb);
    return raise_err(L, "work", &err);
  }
  int done = 0, failed = 0, waiting = 0;
  for (int n = 0; n < max_jobs; n++) {
    sb_job_t job;
    int got = sb_jobs_claim(ctx.db, engine_id, &job, &err);
    if (got < 0) break;
    if (got == 0) {
      if (until_idle) break;
      usleep(200000);
      continue;
    }
    int delay = 0;
    sb_error_clear(&err);
    sb_job_outcome_t o = sb_fleet_run_job(&ctx, &job, &delay, &err);
    while (ctx.db->tx_depth > 0) sb_db_rollback(ctx.db, NULL);
    sb_error_t ferr;
    sb_jobs_finish(ctx.db, engine_id, &job, o, err.msg[0] ? err.msg : NULL, delay,
                   sb_fleet_job_dead, &ctx, &ferr);
    if (o == SB_JOB_DONE) done++;
    else if (o == SB_JOB_WAIT) waiting++;
    else failed++;
    sb_job_clear(&job);
    if (o == SB_JOB_WAIT && until_idle) break; /* the rest would wait too */
  }
  sb_engine_unregister(lockdb, engine_id, &err);
  sb_db_free(lockdb);
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, done);
  lua_setfield(L, -2, "done");
  lua_pushinteger(L, failed);
  lua_setfield(L, -2, "failed");
  lua_pushinteger(L, waiting);
  lua_setfield(L, -2, "waiting");
  return 1;
}

void sb_lua_open_fleet(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"servers", fleet_servers},       {"provision", fleet_provision},
      {"suspend", fleet_suspend},       {"resume", fleet_resume},
      {"deprovision", fleet_deprovision}, {"credentials", fleet_credentials},
      {"jobs", fleet_jobs},             {"work", fleet_work},
      {NULL, NULL},
  };
  luaL_newlib(L, fns);
}

/*
 * config.c: the settings table and how it is filled (see config.h).
 */
#include "config.h"

#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

#define OPT(field) offsetof(sb_config_t, field)

const sb_config_option_t sb_config_options[] = {
    {"database_url", "DATABASE_URL", SB_CFG_STRING, OPT(database_url), NULL, true,
     "management database (libpq URL or key=value string); unset: the embedded cluster"},
    {"database_name", "SOLOBASE_DATABASE_NAME", SB_CFG_STRING, OPT(database_name),
     "solobase_saas", false, "database name inside the embedded cluster"},
    {"data_dir", "SOLOBASE_DATA_DIR", SB_CFG_STRING, OPT(data_dir), "./var", false,
     "directory the engine owns: embedded PostgreSQL, local fleet, backups, keys"},
    {"home", "SOLOBASE_HOME", SB_CFG_STRING, OPT(home), NULL, false,
     "directory holding schema/, seeds/, policies/ and scripts/ (found automatically)"},
    {"schema_dir", "SOLOBASE_SCHEMA_DIR", SB_CFG_STRING, OPT(schema_dir), NULL, false,
     "migrations applied by `db migrate` (default: HOME/schema)"},
    {"seeds_dir", "SOLOBASE_SEEDS_DIR", SB_CFG_STRING, OPT(seeds_dir), NULL, false,
     "seed files applied by `db seed` (default: HOME/seeds)"},
    {"policies_dir", "SOLOBASE_POLICIES_DIR", SB_CFG_STRING, OPT(policies_dir), NULL, false,
     "Lua policies, watched for changes (default: HOME/policies)"},
    {"scripts_dir", "SOLOBASE_SCRIPTS_DIR", SB_CFG_STRING, OPT(scripts_dir), NULL, false,
     "operator scripts (default: HOME/scripts)"},
    {"pg_bindir", "SOLOBASE_PG_BINDIR", SB_CFG_STRING, OPT(pg_bindir), NULL, false,
     "PostgreSQL server programs (default: /usr/lib/postgresql/15/bin, else PATH)"},
    {"log_level", "SOLOBASE_LOG_LEVEL", SB_CFG_STRING, OPT(log_level), "info", false,
     "debug, info, warn or error"},
    {"listen", "SOLOBASE_LISTEN", SB_CFG_STRING, OPT(listen), "127.0.0.1:8080", false,
     "address of the HTTP and websocket server"},
    {"workers", "SOLOBASE_WORKERS", SB_CFG_INT, OPT(workers), "4", false,
     "job worker threads, each with its own connection and Lua state"},
    {"policy_instruction_budget", "SOLOBASE_POLICY_INSTRUCTIONS", SB_CFG_INT,
     OPT(policy_instruction_budget), "1000000", false,
     "Lua VM instructions one policy call may run before it is stopped"},
    {"policy_memory_limit_mb", "SOLOBASE_POLICY_MEMORY_MB", SB_CFG_INT,
     OPT(policy_memory_limit_mb), "64", false, "memory cap of each policy Lua state"},
    {"master_key", "SOLOBASE_MASTER_KEY", SB_CFG_STRING, OPT(master_key), NULL, true,
     "AES-256 master key for secrets at rest, 64 hex digits"},
    {"master_key_file", "SOLOBASE_MASTER_KEY_FILE", SB_CFG_STRING, OPT(master_key_file), NULL,
     false, "file holding the master key (default: DATA_DIR/master.key, made on first use)"},
    {"master_keys_old", "SOLOBASE_MASTER_KEYS_OLD", SB_CFG_STRING, OPT(master_keys_old), NULL,
     true, "earlier master keys (comma-separated hex) still accepted for decryption"},
    {"fleet_driver", "SOLOBASE_FLEET", SB_CFG_STRING, OPT(fleet_driver), "local", false,
     "where customer databases live: local (the only driver built so far)"},
    {"billing_driver", "SOLOBASE_BILLING", SB_CFG_STRING, OPT(billing_driver), "offline", false,
     "billing: offline, the only value until billing is built (nothing is charged)"},
    {"health_check_interval_s", "SOLOBASE_HEALTH_CHECK_INTERVAL", SB_CFG_INT,
     OPT(health_check_interval_s), "300", false, "seconds between server health checks"},
    {"fleet_server_settings", "SOLOBASE_FLEET_SERVER_SETTINGS", SB_CFG_STRING,
     OPT(fleet_server_settings), "shared_buffers=32MB;max_connections=150", false,
     "PostgreSQL settings (name=value;...) of each server the local fleet driver creates"},
    {"pgbouncer_bin", "SOLOBASE_PGBOUNCER", SB_CFG_STRING, OPT(pgbouncer_bin),
     "/usr/sbin/pgbouncer", false, "the PgBouncer program the local driver runs"},
    {"pgbouncer_pool_size", "SOLOBASE_PGBOUNCER_POOL_SIZE", SB_CFG_INT, OPT(pgbouncer_pool_size),
     "20", false, "PgBouncer server connections per database and user (spec: pool size 20)"},
    {"pgbouncer_max_db_connections", "SOLOBASE_PGBOUNCER_MAX_DB_CONNECTIONS", SB_CFG_INT,
     OPT(pgbouncer_max_db_connections), "100", false,
     "PgBouncer connections per database (spec: max connections 100 per database)"},
    {"max_databases_per_server", "SOLOBASE_MAX_DATABASES_PER_SERVER", SB_CFG_INT,
     OPT(max_databases_per_server), "150", false,
     "max_databases of a new shared server when the placement policy does not say"},
    {"api_workers", "SOLOBASE_API_WORKERS", SB_CFG_INT, OPT(api_workers), "2", false,
     "threads answering HTTP API requests, each with its own database connection; a "
     "thread takes every request waiting, so a few serve any load"},
    {"events_coalesce_us", "SOLOBASE_EVENTS_COALESCE_US", SB_CFG_INT, OPT(events_coalesce_us),
     "5000", false,
     "the event listener reads new events at most once per this many microseconds, so a "
     "busy stream reaches each websocket in fewer, larger messages (0: on every NOTIFY)"},
    {"events_fanout_busy_pct", "SOLOBASE_EVENTS_FANOUT_BUSY_PCT", SB_CFG_INT,
     OPT(events_fanout_busy_pct), "50", false,
     "the most of the server loop's time that passes writing new events to the websockets "
     "may take: after a pass of d, the next starts no sooner than d * (100 - pct) / pct "
     "later, and what commits meanwhile goes in it (100: passes back to back)"},
    {"dashboard_dir", "SOLOBASE_DASHBOARD_DIR", SB_CFG_STRING, OPT(dashboard_dir), NULL, false,
     "static files served at / (default: HOME/examples/dashboard)"},
    {NULL, NULL, 0, 0, NULL, false, NULL},
};

static sb_config_t cfg;

sb_config_t *sb_config(void) { return &cfg; }

const sb_config_option_t *sb_config_find(const char *name) {
  for (const sb_config_option_t *o = sb_config_options; o->name; o++)
    if (strcmp(o->name, name) == 0) return o;
  return NULL;
}

static int set_option(const sb_config_option_t *o, const char *value, const char *origin,
                      sb_error_t *err) {
  char *base = (char *)&cfg;
  if (o->type == SB_CFG_STRING) {
    char **slot = (char **)(base + o->offset);
    free(*slot);
    *slot = value ? sb_xstrdup(value) : NULL;
    return 0;
  }
  char *end = NULL;
  errno = 0;
  long v = strtol(value, &end, 10);
  if (errno || end == value || *end || v < 0) {
    sb_error_set(err, "%s: setting %s must be a non-negative integer, got '%s'", origin,
                 o->name, value);
    return -1;
  }
  *(long *)(base + o->offset) = v;
  return 0;
}

int sb_config_set(const char *name, const char *value, sb_error_t *err) {
  const sb_config_option_t *o = sb_config_find(name);
  if (!o) {
    sb_error_set(err, "unknown setting '%s' (see `solobase config`)", name);
    return -1;
  }
  return set_option(o, value, "command line", err);
}

/* Config-file globals go through this guard, so a typo fails at its line. */
static int conf_newindex(lua_State *L) {
  /* stack: env, key, value */
  const char *key = lua_tostring(L, 2);
  const sb_config_option_t *o = key ? sb_config_find(key) : NULL;
  if (!o) return luaL_error(L, "unknown setting '%s'", key ? key : "?");
  int t = lua_type(L, 3);
  if (o->type == SB_CFG_STRING && t != LUA_TSTRING)
    return luaL_error(L, "setting '%s' must be a string", key);
  if (o->type == SB_CFG_INT && !lua_isinteger(L, 3))
    return luaL_error(L, "setting '%s' must be an integer", key);
  lua_rawset(L, 1);
  return 0;
}

static int load_file(const char *file, sb_error_t *err) {
  lua_State *L = luaL_newstate();
  if (!L) {
    sb_error_set(err, "cannot create a Lua state for %s", file);
    return -1;
  }
  int rc = -1;
  if (luaL_loadfilex(L, file, "t") != LUA_OK) {
    sb_error_set(err, "%s", lua_tostring(L, -1));
    goto done;
  }
  lua_newtable(L);                      /* env */
  lua_newtable(L);                      /* env's metatable */
  lua_pushcfunction(L, conf_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  if (!lua_setupvalue(L, -3, 1)) lua_pop(L, 1); /* chunk's _ENV := env */
  lua_insert(L, -2);                    /* stack: env, chunk */
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    sb_error_set(err, "%s", lua_tostring(L, -1));
    goto done;
  }
  for (const sb_config_option_t *o = sb_config_options; o->name; o++) {
    lua_getfield(L, -1, o->name);
    if (!lua_isnil(L, -1)) {
      if (set_option(o, lua_tostring(L, -1), file, err) != 0) goto done;
    }
    lua_pop(L, 1);
  }
  rc = 0;
done:
  lua_close(L);
  return rc;
}

int sb_config_load(const char *file, sb_error_t *err) {
  sb_config_free();
  for (const sb_config_option_t *o = sb_config_options; o->name; o++)
    if (o->default_value && set_option(o, o->default_value, "default", err) != 0) return -1;
  if (!file) file = getenv("SOLOBASE_CONFIG");
  if (file && *file) {
    if (load_file(file, err) != 0) return -1;
    cfg.config_file = sb_xstrdup(file);
  }
  for (const sb_config_option_t *o = sb_config_options; o->name; o++) {
    const char *v = getenv(o->env);
    if (v && *v && set_option(o, v, o->env, err) != 0) return -1;
  }
  return 0;
}

/* The share directory: $SOLOBASE_HOME, else next to an installed binary
 * (PREFIX/bin/../share/solobase), else the source tree of a build-tree binary. */
static char *find_home(void) {
  char *exe = sb_exe_dir();
  char *candidates[] = {
      sb_xasprintf("%s/../share/solobase", exe),
      sb_xasprintf("%s/..", exe),
      sb_xstrdup(SB_SOURCE_DIR),
      sb_xstrdup(SB_INSTALL_DATADIR),
  };
  char *found = NULL;
  for (size_t i = 0; i < SB_ARRAY_LEN(candidates); i++) {
    char *schema = sb_path_join(candidates[i], "schema/001_initial_schema.sql");
    if (!found && sb_path_exists(schema)) found = realpath(candidates[i], NULL);
    free(schema);
    free(candidates[i]);
  }
  free(exe);
  return found ? found : sb_path_absolute(".");
}

static void derive_dir(char **slot, const char *home, const char *name) {
  char *p = *slot ? sb_path_absolute(*slot) : sb_path_join(home, name);
  free(*slot);
  *slot = p;
}

int sb_config_finish(sb_error_t *err) {
  sb_log_level_t level;
  if (sb_log_parse_level(cfg.log_level, &level) != 0) {
    sb_error_set(err, "log_level must be debug, info, warn or error, got '%s'", cfg.log_level);
    return -1;
  }
  sb_log_set_level(level);
  if (cfg.database_url && !*cfg.database_url) {
    free(cfg.database_url);
    cfg.database_url = NULL;
  }
  char *abs = sb_path_absolute(cfg.data_dir);
  free(cfg.data_dir);
  cfg.data_dir = abs;
  if (!cfg.home) cfg.home = find_home();
  else derive_dir(&cfg.home, ".", ".");
  derive_dir(&cfg.schema_dir, cfg.home, "schema");
  derive_dir(&cfg.seeds_dir, cfg.home, "seeds");
  derive_dir(&cfg.policies_dir, cfg.home, "policies");
  derive_dir(&cfg.scripts_dir, cfg.home, "scripts");
  derive_dir(&cfg.dashboard_dir, cfg.home, "examples/dashboard");
  if (!cfg.master_key_file) cfg.master_key_file = sb_path_join(cfg.data_dir, "master.key");
  if (cfg.events_fanout_busy_pct < 1 || cfg.events_fanout_busy_pct > 100) {
    sb_error_set(err, "events_fanout_busy_pct must be from 1 to 100, got %ld",
                 cfg.events_fanout_busy_pct);
    return -1;
  }
  if (cfg.workers < 1 || cfg.api_workers < 1) {
    sb_error_set(err, "workers and api_workers must be at least 1");
    return -1;
  }
  if (cfg.health_check_interval_s < 1) {
    sb_error_set(err, "health_check_interval_s must be at least 1");
    return -1;
  }
  /* Refused here rather than when the engine starts, so `solobase config` says so. */
  if (strcmp(cfg.fleet_driver, "local") != 0) {
    sb_error_set(err, "fleet_driver '%s' is not built (this build has: local)", cfg.fleet_driver);
    return -1;
  }
  if (strcmp(cfg.billing_driver, "offline") != 0) {
    sb_error_set(err, "billing_driver '%s' is not built (this build has: offline)", cfg.billing_driver);
    return -1;
  }
  return 0;
}

void sb_config_print(FILE *out) {
  char *base = (char *)&cfg;
  for (const sb_config_option_t *o = sb_config_options; o->name; o++) {
    if (o->type == SB_CFG_INT) {
      fprintf(out, "%-26s = %ld\n", o->name, *(long *)(base + o->offset));
      continue;
    }
    const char *v = *(char **)(base + o->offset);
    if (o->secret && o->offset == OPT(database_url) && v) {
      char red[512];
      sb_redact_conninfo(v, red, sizeof red);
      fprintf(out, "%-26s = %s\n", o->name, red);
    } else if (o->secret) {
      fprintf(out, "%-26s = %s\n", o->name, v ? "(set)" : "(unset)");
    } else {
      fprintf(out, "%-26s = %s\n", o->name, v ? v : "(unset)");
    }
  }
  if (cfg.config_file) fprintf(out, "# loaded from %s\n", cfg.config_file);
}

void sb_config_free(void) {
  char *base = (char *)&cfg;
  for (const sb_config_option_t *o = sb_config_options; o->name; o++)
    if (o->type == SB_CFG_STRING) {
      char **slot = (char **)(base + o->offset);
      free(*slot);
      *slot = NULL;
    }
  free(cfg.config_file);
  cfg.config_file = NULL;
}

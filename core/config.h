/*
 * config.h: the engine's settings, from defaults, an optional config file, the
 * environment and the command line, in that order of precedence (last wins).
 *
 * Every setting has one row in the table in config.c: its name (the key in the config
 * file and in sb.config), its environment variable, its type, its default and a line of
 * help. `solobase config` prints the effective values; docs/configuration.md lists them.
 * The config file is Lua (`data_dir = "/srv/solobase"`), evaluated with no libraries;
 * assigning an unknown name is an error with file:line.
 */
#ifndef SB_CONFIG_H
#define SB_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "error.h"

typedef struct sb_config {
  char *database_url;   /* NULL: the embedded cluster under data_dir */
  char *database_name;  /* database of the embedded cluster */
  char *data_dir;       /* absolute after sb_config_finish() */
  char *home;           /* holds schema/, seeds/, policies/, scripts/ */
  char *schema_dir;
  char *seeds_dir;
  char *policies_dir;
  char *scripts_dir;
  char *pg_bindir;      /* PostgreSQL server programs (initdb, pg_ctl, postgres) */
  char *log_level;
  char *listen;
  long workers;
  long policy_instruction_budget;
  long policy_memory_limit_mb;
  char *master_key;       /* secret: 64 hex digits */
  char *master_key_file;
  char *master_keys_old;  /* secret: earlier keys, comma-separated, for decryption only */
  char *fleet_driver;
  char *billing_driver;
  long health_check_interval_s;
  char *fleet_server_settings; /* "name=value;..." added to each local fleet server */
  char *pgbouncer_bin;
  long pgbouncer_pool_size;
  long pgbouncer_max_db_connections;
  long max_databases_per_server;
  long api_workers;
  long events_coalesce_us; /* the event listener reads new events at most once per this */
  long events_fanout_busy_pct; /* fan-out passes take at most this share of the loop */
  char *dashboard_dir;
  char *config_file;      /* the file that was loaded, if any */
} sb_config_t;

typedef enum { SB_CFG_STRING, SB_CFG_INT } sb_config_type_t; /* INT fields are long */

typedef struct sb_config_option {
  const char *name;
  const char *env;
  sb_config_type_t type;
  size_t offset;
  const char *default_value; /* NULL: unset (or derived in sb_config_finish) */
  bool secret;               /* never printed, never exposed to Lua */
  const char *help;
} sb_config_option_t;

extern const sb_config_option_t sb_config_options[];

/* The process-wide settings; valid after sb_config_load(). */
sb_config_t *sb_config(void);

/* Loads defaults, then file (may be NULL: $SOLOBASE_CONFIG, else none), then the
 * environment. Command-line overrides follow with sb_config_set(), then
 * sb_config_finish() derives the remaining paths. */
int sb_config_load(const char *file, sb_error_t *err);
int sb_config_set(const char *name, const char *value, sb_error_t *err);
int sb_config_finish(sb_error_t *err);
const sb_config_option_t *sb_config_find(const char *name);
/* Writes "name = value" lines for `solobase config`, secrets shown as set/unset. */
void sb_config_print(FILE *out);
void sb_config_free(void);

#endif

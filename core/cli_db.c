/*
 * cli_db.c: `solobase db ...`: the management database's life cycle.
 *
 * init creates the database (and, without DATABASE_URL, the embedded cluster), migrate
 * applies schema/, seed applies seeds/, status lists applied and pending migrations,
 * start/stop run the embedded cluster, url prints the connection string for psql.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "mgmtdb.h"
#include "migrate.h"
#include "util.h"

/* Parses a subcommand that takes no options but --help. Returns -1 to go on, else the
 * exit status the command should return (after printing help, or a usage error). */
static int no_options(int argc, char **argv, const char *help) {
  static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    if (c == 'h') {
      fputs(help, stdout);
      return SB_EXIT_OK;
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "db %s", argv[0]);
    return sb_cli_bad_option(cmd, argv);
  }
  if (optind < argc) return sb_cli_usage_error("db", "unexpected argument '%s'", argv[optind]);
  return -1;
}
#define OPTIONS_OR_RETURN(help)            \
  do {                                     \
    int r_ = no_options(argc, argv, help); \
    if (r_ >= 0) return r_;                \
  } while (0)

static void describe_target(FILE *out) {
  const char *url = sb_config()->database_url;
  if (url) {
    char red[512];
    sb_redact_conninfo(url, red, sizeof red);
    fprintf(out, "management database: %s (DATABASE_URL)\n", red);
  } else {
    fprintf(out, "management database: %s in the embedded cluster under %s\n",
            sb_config()->database_name, sb_config()->data_dir);
  }
}

static int db_init(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db init\n\n"
                    "Creates the management database when it is missing. Without DATABASE_URL\n"
                    "this first initialises and starts the embedded PostgreSQL cluster.\n");
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) return sb_cli_fail_err(&err);
  bool created = false;
  int rc = sb_mgmtdb_create_database(url, &created, &err);
  char red[512];
  sb_redact_conninfo(url, red, sizeof red);
  explicit_bzero(url, strlen(url));
  free(url);
  if (rc != 0) return sb_cli_fail_err(&err);
  printf("%s %s\n", created ? "created" : "ready:", red);
  return SB_EXIT_OK;
}

static int db_migrate(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db migrate\n\n"
                    "Applies the files of schema/ that are not applied yet, in order, each in its\n"
                    "own transaction, recording name and sha256 in schema_migrations. Refuses\n"
                    "when an applied file has changed. Safe to run from several places at once.\n");
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase db migrate", &err);
  if (!db) return sb_cli_fail_err(&err);
  int applied = 0;
  int rc = sb_migrate_apply(db, sb_config()->schema_dir, &applied, &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  if (applied) printf("applied %d migration%s\n", applied, applied == 1 ? "" : "s");
  else printf("nothing to migrate: the database is up to date\n");
  return SB_EXIT_OK;
}

static int db_seed(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db seed\n\n"
                    "Runs every file of seeds/ in order, each in its own transaction. Seeds are\n"
                    "idempotent: running them again changes nothing.\n");
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase db seed", &err);
  if (!db) return sb_cli_fail_err(&err);
  int files = 0;
  int rc = sb_seed_apply(db, sb_config()->schema_dir, sb_config()->seeds_dir, &files, &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  printf("ran %d seed file%s\n", files, files == 1 ? "" : "s");
  return SB_EXIT_OK;
}

static int db_status(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db status\n\n"
                    "Lists applied and pending migrations; marks files changed since they were\n"
                    "applied. Exits 1 when the history is inconsistent.\n");
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase db status", &err);
  if (!db) return sb_cli_fail_err(&err);
  sb_migration_list_t list;
  int rc = sb_migrate_status(db, sb_config()->schema_dir, &list, &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  describe_target(stdout);
  printf("migrations in %s:\n", sb_config()->schema_dir);
  int pending = 0, broken = 0;
  for (size_t i = 0; i < list.n; i++) {
    const sb_migration_t *m = &list.items[i];
    if (!m->applied) {
      printf("  pending  %s\n", m->name);
      pending++;
    } else if (!m->path) {
      printf("  MISSING  %-36s applied %s, file is gone\n", m->name, m->applied_at);
      broken++;
    } else if (strcmp(m->sha256, m->applied_sha256) != 0) {
      printf("  CHANGED  %-36s applied %s, file edited since\n", m->name, m->applied_at);
      broken++;
    } else {
      printf("  applied  %-36s %s  sha256 %.12s\n", m->name, m->applied_at, m->sha256);
    }
  }
  printf("%zu applied, %d pending\n", list.n - (size_t)pending, pending);
  sb_migration_list_free(&list);
  if (broken) return sb_cli_fail("%d applied migration%s changed or missing", broken,
                                 broken == 1 ? "" : "s");
  return SB_EXIT_OK;
}

static int db_start(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db start\n\n"
                    "Initialises (first time) and starts the embedded PostgreSQL cluster.\n");
  if (sb_config()->database_url)
    return sb_cli_fail("DATABASE_URL is set, so there is no embedded cluster to start");
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) return sb_cli_fail_err(&err);
  char red[512];
  sb_redact_conninfo(url, red, sizeof red);
  explicit_bzero(url, strlen(url));
  free(url);
  printf("running: %s\n", red);
  return SB_EXIT_OK;
}

static int db_stop(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db stop\n\n"
                    "Stops the embedded PostgreSQL cluster (fast shutdown: open transactions\n"
                    "roll back, nothing committed is lost).\n");
  sb_error_t err;
  if (sb_config()->database_url)
    return sb_cli_fail("DATABASE_URL is set, so there is no embedded cluster to stop");
  if (sb_embedded_stop(&err) != 0) return sb_cli_fail_err(&err);
  printf("stopped\n");
  return SB_EXIT_OK;
}

static int db_url(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase db url\n\n"
                    "Prints the management database's connection URL, password included, for\n"
                    "tools such as psql: psql \"$(solobase db url)\".\n");
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) return sb_cli_fail_err(&err);
  puts(url);
  explicit_bzero(url, strlen(url));
  free(url);
  return SB_EXIT_OK;
}

static const sb_cli_command_t db_commands[] = {
    {"init", db_init, "create the management database (and the embedded cluster)"},
    {"migrate", db_migrate, "apply pending schema/ migrations"},
    {"seed", db_seed, "apply seeds/ (idempotent)"},
    {"status", db_status, "list applied and pending migrations"},
    {"start", db_start, "start the embedded PostgreSQL cluster"},
    {"stop", db_stop, "stop the embedded PostgreSQL cluster"},
    {"url", db_url, "print the management database URL (with password)"},
    {NULL, NULL, NULL},
};

int sb_cmd_db(int argc, char **argv) {
  return sb_cli_dispatch("db", db_commands,
                         "usage: solobase db COMMAND\n\n"
                         "The management database. DATABASE_URL selects a server; without it the\n"
                         "engine runs its own PostgreSQL cluster under the data directory.\n",
                         argc, argv);
}

int sb_cmd_config(int argc, char **argv) {
  OPTIONS_OR_RETURN("usage: solobase config\n\n"
                    "Prints the effective settings (secrets shown only as set or unset).\n"
                    "See docs/configuration.md.\n");
  sb_config_print(stdout);
  return SB_EXIT_OK;
}

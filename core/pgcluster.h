/*
 * pgcluster.h: a PostgreSQL 15 cluster this engine creates and runs on its own machine.
 *
 * The embedded management database and every server of the `local` fleet driver are
 * such clusters: initdb into a directory the engine owns, listening on 127.0.0.1 only
 * (no Unix socket), password authentication (scram-sha-256) for every connection, a
 * superuser whose password only the engine knows. When the engine runs as root the
 * cluster runs as the `postgres` user, since PostgreSQL refuses root.
 *
 * Layout of root/: data/ (PGDATA), server.log.
 */
#ifndef SB_PGCLUSTER_H
#define SB_PGCLUSTER_H

#include <stdbool.h>

#include "error.h"
#include "proc.h"

typedef struct sb_pgcluster {
  char *root;
  char *data_dir;
  char *log_file;
  char *bindir;
  char *superuser;
  char *password; /* secret */
  int port;       /* the port to start on; updated from postmaster.pid when running */
  sb_runas_t as;
} sb_pgcluster_t;

/* Resolves the directory of initdb/pg_ctl: the configured pg_bindir, else
 * /usr/lib/postgresql/15/bin, else `pg_config --bindir`. Caller frees. */
char *sb_pg_bindir(sb_error_t *err);

sb_pgcluster_t *sb_pgcluster_new(const char *root, const char *superuser, const char *password,
                                 int port, sb_error_t *err);
void sb_pgcluster_free(sb_pgcluster_t *c);

bool sb_pgcluster_initialized(const sb_pgcluster_t *c);
/* initdb, then appends conf_lines (NULL-terminated, may be NULL) to postgresql.conf. */
int sb_pgcluster_init(sb_pgcluster_t *c, const char *const *conf_lines, bool nosync,
                      sb_error_t *err);
/* Starts on c->port and waits until it accepts connections. */
int sb_pgcluster_start(sb_pgcluster_t *c, sb_error_t *err);
/* Fast shutdown (in-flight transactions roll back), waiting for it to finish. */
int sb_pgcluster_stop(sb_pgcluster_t *c, sb_error_t *err);
/* True when the postmaster runs; sets c->port to the port it listens on. */
bool sb_pgcluster_running(sb_pgcluster_t *c);
/* Connection URL for dbname as the superuser; caller frees. Holds the password. */
char *sb_pgcluster_url(const sb_pgcluster_t *c, const char *dbname);

#endif

/*
 * proc.h: running helper programs (initdb, pg_ctl, pg_dump, pgbouncer), optionally as
 * another OS user.
 *
 * PostgreSQL refuses to run as root, so when the engine runs as root it starts its
 * clusters as the `postgres` user: the child drops to that user before exec. Output
 * (stdout and stderr together) is captured so a failure can be reported with what the
 * program said.
 */
#ifndef SB_PROC_H
#define SB_PROC_H

#include <stdbool.h>
#include <sys/types.h>

#include "error.h"

typedef struct sb_runas {
  bool active; /* false: run as ourselves */
  uid_t uid;
  gid_t gid;
  char home[256];
  char name[64];
} sb_runas_t;

/* Who runs PostgreSQL: nobody else unless we are root, then the `postgres` user. */
int sb_runas_postgres(sb_runas_t *out, sb_error_t *err);

/* Runs argv[0] (a path) with argv, waiting for it. output (may be NULL) receives what it
 * printed, which the caller frees. Returns the exit status (0..255), or -1 with err set
 * when it could not be run or died of a signal. */
int sb_proc_run(const char *const argv[], const sb_runas_t *as, const char *cwd, char **output,
                sb_error_t *err);

/* True when `as` can search (and with write, also write) path. */
bool sb_proc_can_access(const sb_runas_t *as, const char *path, bool write);
/* chown path to `as` (no-op when not switching users). */
int sb_proc_chown(const sb_runas_t *as, const char *path, sb_error_t *err);

#endif

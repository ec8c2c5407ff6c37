/*
 * fleet.h: the driver interface behind which customer database servers live.
 *
 * The core decides (policies) and keeps state (the management database); a driver
 * only performs effects on servers: create and run a server, create and drop a
 * tenant's database and login role, suspend and resume a role, probe health, dump a
 * database. Every operation is idempotent, because the core retries steps after a
 * crash: creating what exists completes it, dropping what is gone succeeds.
 *
 * Secrets cross this interface in plaintext, in memory only: the core stores them
 * encrypted (core/secrets.h) and decrypts them for the call. Drivers never log them.
 *
 * Drivers: `local` (core/fleet_local.c: PostgreSQL 15 clusters this engine runs, with
 * PgBouncer in front of shared servers); `aws` later (RDS over HTTPS).
 */
#ifndef SB_FLEET_H
#define SB_FLEET_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

/* A server as the driver sees it. Filled by the core from shared_rds_instances or
 * dedicated_rds_instances; create and ensure_running update host and ports. */
typedef struct sb_server {
  char name[64];            /* rds_instance_id: unique, [a-z0-9-]; the local cluster's dir */
  char host[256];           /* where PostgreSQL and PgBouncer listen */
  int port;                 /* PostgreSQL; 0 until created */
  int pooler_port;          /* PgBouncer; 0 when the server has none */
  bool pooler;              /* shared servers sit behind PgBouncer */
  char admin_user[64];      /* the server's superuser */
  char admin_password[128]; /* secret */
} sb_server_t;

typedef struct sb_server_health {
  bool ok;
  char error[512];     /* why not ok */
  int databases;       /* tenant databases (not postgres or templates) */
  int64_t total_bytes; /* sum of pg_database_size over all databases */
  double latency_ms;   /* connect + SELECT 1 */
} sb_server_health_t;

typedef struct sb_fleet_driver sb_fleet_driver_t;

struct sb_fleet_driver {
  const char *name;
  void *state;

  /* Creates the server srv->name with srv->admin_user/admin_password as its
   * superuser, starts it (and its PgBouncer when srv->pooler) and fills in host and
   * ports. If it exists already (a retry after a crash), completes what is missing. */
  int (*server_create)(sb_fleet_driver_t *d, sb_server_t *srv, sb_error_t *err);
  /* Makes sure a created server runs (after an engine or machine restart); ports may
   * change, so srv is updated. */
  int (*server_ensure_running)(sb_fleet_driver_t *d, sb_server_t *srv, sb_error_t *err);
  int (*server_stop)(sb_fleet_driver_t *d, const sb_server_t *srv, sb_error_t *err);
  /* Stops the server and removes all its data. Gone already is success. */
  int (*server_destroy)(sb_fleet_driver_t *d, const sb_server_t *srv, sb_error_t *err);
  /* Connect, SELECT 1, count tenant databases and total size. Returns 0 with
   * out->ok false when the server answers badly; -1 only for misuse. */
  int (*server_probe)(sb_fleet_driver_t *d, const sb_server_t *srv, sb_server_health_t *out,
                      sb_error_t *err);

  /* Creates login role `role` with `password` and database `dbname` owned by it, with
   * CONNECT revoked from PUBLIC so no other tenant can reach it; registers the role
   * with the server's PgBouncer. Existing role/database: the password is reset and
   * the privileges re-applied. */
  int (*database_create)(sb_fleet_driver_t *d, const sb_server_t *srv, const char *dbname,
                         const char *role, const char *password, sb_error_t *err);
  /* Terminates sessions, drops the database and the role, unregisters the role from
   * PgBouncer. Missing ones are fine. */
  int (*database_drop)(sb_fleet_driver_t *d, const sb_server_t *srv, const char *dbname,
                       const char *role, sb_error_t *err);
  /* login false: NOLOGIN and end the role's sessions (suspend); true: LOGIN (resume). */
  int (*role_set_login)(sb_fleet_driver_t *d, const sb_server_t *srv, const char *role,
                        bool login, sb_error_t *err);
  /* pg_dump -Fc of dbname into path (written atomically); *size_out gets its size. */
  int (*database_dump)(sb_fleet_driver_t *d, const sb_server_t *srv, const char *dbname,
                       const char *path, int64_t *size_out, sb_error_t *err);

  void (*free)(sb_fleet_driver_t *d);
};

/* The local driver: servers are clusters under base_dir/servers/NAME (see
 * sb_cluster_base_dir in mgmtdb.h), PostgreSQL settings from the fleet_server_settings
 * setting. */
sb_fleet_driver_t *sb_fleet_local_new(const char *base_dir, sb_error_t *err);

/* The connection URL of a tenant: through PgBouncer when the server has one.
 * Caller frees. Holds the password. */
char *sb_fleet_tenant_url(const sb_server_t *srv, const char *dbname, const char *role,
                          const char *password);

#endif

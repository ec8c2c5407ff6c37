/*
 * provision.h: customer instances and the servers they live on, as persisted state
 * machines (the spec's "Instance Provisioning Flow", made safe under concurrency).
 *
 * Instance: requested -> provisioning -> active; failed (with a reason); suspended;
 * deleting -> deleted. A request is one transaction: the provisioning policy decides
 * tier and quotas, the placement policy chooses a shared server, capacity is taken by a
 * conditional UPDATE (current_databases < max_databases, so no race can over-fill a
 * server), and the instance row, the spec's `created` event, both decisions and the
 * provisioning job are written together. The job then makes the tenant database on the
 * server through the fleet driver and marks the instance active. Every step checks the
 * state it starts from and is safe to repeat, so a kill -9 anywhere resumes on
 * restart with nothing lost, duplicated or half made; current_databases always counts
 * the instances that hold a place on the server (provisioning, active, suspended,
 * deleting).
 *
 * Servers: a `server.create` job makes a shared server when placement asks (at most
 * one at a time); health checks probe every server and mark failing ones degraded (no
 * new databases) until they recover.
 */
#ifndef SB_PROVISION_H
#define SB_PROVISION_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "decision.h"
#include "error.h"
#include "fleet.h"
#include "jobs.h"
#include "policy.h"
#include "secrets.h"

/* What an operation needs; one per thread (a worker, a script, an API request). */
typedef struct sb_fleet_ctx {
  sb_db_t *db;
  sb_policy_engine_t *policies;
  sb_fleet_driver_t *driver; /* NULL: requests can be made, jobs not run */
  sb_keyring_t *keys;
  const char *actor;         /* recorded on events: "api", "script:x", "engine" */
} sb_fleet_ctx_t;

/* Error codes of refused requests (in sb_error_t.sqlstate, beside SQLSTATEs). */
#define SB_ERR_NOT_FOUND "SB404"
#define SB_ERR_REFUSED "SB403"  /* the provisioning policy said no */
#define SB_ERR_CONFLICT "SB409" /* subdomain taken, wrong state */
#define SB_ERR_INVALID "SB400"

/* What a request may ask for (docs/http-api.md, POST /v1/instances): name 1 to 100
 * characters (code points) of UTF-8; subdomain and region 1 to 63 of a-z, 0-9 and '-',
 * not starting or ending with '-' (a DNS label, as region names such as us-east-1
 * are), the region one the fleet has: `local` (where the engine makes its servers) or
 * that of one of its shared servers. */
typedef struct sb_provision_request {
  const char *user_id;
  const char *plan;      /* plan code */
  const char *name;
  const char *subdomain;
  const char *region;    /* NULL: local */
} sb_provision_request_t;

typedef struct sb_provision_result {
  char instance_id[37];
  char job_id[37];
  char event_id[37];
  char status[16];       /* provisioning, or requested when no server has room yet */
  char shared_rds_id[37];
  bool opening_server;   /* placement asked for a new shared server */
  /* On failure with SB_ERR_INVALID or SB_ERR_NOT_FOUND, the request member at fault
   * ("user_id", "plan", "name", "subdomain", "region"; static), else NULL. */
  const char *field;
} sb_provision_result_t;

/* One transaction, serialised per user (a row lock on the user, taken before the
 * user's instances are counted), so that concurrent requests cannot together exceed
 * the plan's instance limit. Inside a caller's transaction it runs under a savepoint. */
int sb_provision_request(sb_fleet_ctx_t *ctx, const sb_provision_request_t *req,
                         sb_provision_result_t *out, sb_error_t *err);
/* Queue a lifecycle change; job_id (37 bytes) gets the job. reason: NULL (`operator`)
 * or 1 to 63 of [a-z_], else SB_ERR_INVALID. */
int sb_instance_suspend(sb_fleet_ctx_t *ctx, const char *instance_id, const char *reason,
                        char *job_id, sb_error_t *err);
int sb_instance_resume(sb_fleet_ctx_t *ctx, const char *instance_id, char *job_id,
                       sb_error_t *err);
int sb_instance_deprovision(sb_fleet_ctx_t *ctx, const char *instance_id, char *job_id,
                            sb_error_t *err);
/* The tenant's connection URL (password decrypted); caller frees. */
char *sb_instance_credentials(sb_fleet_ctx_t *ctx, const char *instance_id, sb_error_t *err);

/* Runs a job of any kind this module knows; err holds the reason on failure. */
sb_job_outcome_t sb_fleet_run_job(sb_fleet_ctx_t *ctx, const sb_job_t *job, int *delay_s,
                                  sb_error_t *err);
/* An sb_job_dead_fn (jobs.h), ud an sb_fleet_ctx_t whose db is replaced by db: a
 * provisioning job that dies fails its instance, with the job's last error as the
 * reason, and gives back the place it held. Other kinds leave nothing behind. */
int sb_fleet_job_dead(void *ud, sb_db_t *db, const sb_job_t *job, const char *error,
                      sb_error_t *err);
/* Starts every local server of the fleet again (after the engine or machine
 * restarted); ports may move and are written back. */
int sb_fleet_restart_servers(sb_fleet_ctx_t *ctx, sb_error_t *err);

/* A random version-4 UUID in out (37 bytes). */
void sb_uuid_v4(char *out);


#endif

/*
 * engine.h: one running engine process: job workers, the coordinator (liveness lock,
 * LISTEN for new jobs, scheduler leadership, recovery of dead engines' jobs) and the
 * policy watcher.
 *
 * Any number of engines may run on one management database; they cooperate only
 * through it: jobs are claimed with SKIP LOCKED, the scheduler runs on whichever
 * engine holds the scheduler advisory lock (another takes over within a second or two
 * of its death), and each due schedule is claimed by a conditional UPDATE, so periodic
 * work happens once.
 *
 * The process outlives the database: when its coordination connection breaks it stops
 * claiming jobs, waits for the database and registers again under a new engine id
 * (engine.c, docs/architecture.md).
 */
#ifndef SB_ENGINE_H
#define SB_ENGINE_H

#include <stdbool.h>

#include "error.h"
#include "fleet.h"
#include "policy.h"
#include "secrets.h"

typedef struct sb_engine sb_engine_t;

typedef struct sb_engine_stats {
  long engine_id; /* 0 while the engine waits for the database */
  bool leader;
  unsigned long jobs_done, jobs_retried, jobs_dead, jobs_waiting;
  int workers_busy, workers;
  unsigned long policy_reloads;
} sb_engine_stats_t;

/* Starts workers (the `workers` setting), the coordinator and the policy watcher. */
sb_engine_t *sb_engine_start(sb_error_t *err);
/* Asks every thread to stop after what it is doing. Async-signal-safe. */
void sb_engine_request_stop(sb_engine_t *e);
/* Asks for a policy reload. Async-signal-safe (SIGHUP). */
void sb_engine_reload_policies(sb_engine_t *e);
/* Waits for the threads after a stop request, unregisters, frees. */
void sb_engine_free(sb_engine_t *e);
/* Blocks until a stop is requested. */
void sb_engine_wait(sb_engine_t *e);

void sb_engine_stats(sb_engine_t *e, sb_engine_stats_t *out);
sb_policy_registry_t *sb_engine_policies(sb_engine_t *e);
sb_keyring_t *sb_engine_keys(sb_engine_t *e);
sb_fleet_driver_t *sb_engine_driver(sb_engine_t *e);
/* The management database URL the engine uses (a secret). */
const char *sb_engine_db_url(sb_engine_t *e);

/* The fleet driver named by the fleet_driver setting. */
sb_fleet_driver_t *sb_fleet_driver_open(sb_error_t *err);

#endif

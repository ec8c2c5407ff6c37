/*
 * metrics.h: counters and histograms of this engine process, rendered for Prometheus
 * at GET /metrics (docs/http-api.md lists them).
 *
 * Recording is lock-free (atomics) so any thread may record; rendering reads a
 * consistent-enough snapshot, as Prometheus clients do.
 */
#ifndef SB_METRICS_H
#define SB_METRICS_H

#include <stdbool.h>

typedef enum {
  SB_ROUTE_HEALTHZ, SB_ROUTE_METRICS, SB_ROUTE_PLANS, SB_ROUTE_INSTANCES, SB_ROUTE_INSTANCE,
  SB_ROUTE_INSTANCE_ACTION, SB_ROUTE_INSTANCE_EVENTS, SB_ROUTE_SERVERS, SB_ROUTE_EVENTS_WS,
  SB_ROUTE_STATIC, SB_ROUTE_UNKNOWN, SB_ROUTE_N
} sb_route_t;

const char *sb_route_name(sb_route_t route);
void sb_metrics_http(sb_route_t route, const char *method, int status, double seconds);
void sb_metrics_ws_clients(int delta);
void sb_metrics_events_delivered(unsigned long n);

/* What the renderer is given from elsewhere (engine, database, policies). */
typedef struct sb_metrics_extra {
  /* Jobs by status, every status of jobs_status_check (schema/003_jobs.sql); -1: unknown. */
  long jobs_queued, jobs_running, jobs_succeeded, jobs_dead, jobs_canceled;
  unsigned long jobs_done, jobs_retried, jobs_failed;
  unsigned long policy_decisions, policy_errors, policy_reloads;
  bool leader;
  long engine_id; /* the engine's id; 0: it waits for the database to register again */
} sb_metrics_extra_t;

/* Prometheus text; caller frees. */
char *sb_metrics_render(const sb_metrics_extra_t *x);

#endif

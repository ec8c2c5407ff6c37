/*
 * metrics.c: lock-free counters and the Prometheus text renderer (see metrics.h).
 */
#include "metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static const char *const routes[SB_ROUTE_N] = {
    "/healthz", "/metrics", "/v1/plans", "/v1/instances", "/v1/instances/{id}",
    "/v1/instances/{id}/{action}", "/v1/instances/{id}/events", "/v1/servers", "/v1/events",
    "static", "unknown",
};
static const char *const methods[] = {"GET", "POST", "DELETE", "OTHER"};
#define NMETHODS 4
static const int statuses[] = {101, 200, 202, 204, 301, 304, 400, 401, 403, 404, 405, 409, 413, 415, 500, 503, 0};
#define NSTATUSES 17
static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NBOUNDS 12

static _Atomic unsigned long requests[SB_ROUTE_N][NMETHODS][NSTATUSES];
static _Atomic unsigned long buckets[SB_ROUTE_N][NBOUNDS + 1];
static _Atomic unsigned long duration_us[SB_ROUTE_N];
static _Atomic long ws_clients;
static _Atomic unsigned long delivered;

const char *sb_route_name(sb_route_t route) { return routes[route]; }

void sb_metrics_http(sb_route_t route, const char *method, int status, double seconds) {
  int m = NMETHODS - 1, s = NSTATUSES - 1, b = NBOUNDS;
  for (int i = 0; i < NMETHODS - 1; i++)
    if (strcmp(method, methods[i]) == 0) m = i;
  for (int i = 0; i < NSTATUSES - 1; i++)
    if (statuses[i] == status) s = i;
  for (int i = 0; i < NBOUNDS; i++)
    if (seconds <= bounds[i]) {
      b = i;
      break;
    }
  atomic_fetch_add_explicit(&requests[route][m][s], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&buckets[route][b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&duration_us[route], (unsigned long)(seconds * 1e6), memory_order_relaxed);
}

void sb_metrics_ws_clients(int delta) { atomic_fetch_add(&ws_clients, delta); }
void sb_metrics_events_delivered(unsigned long n) {
  atomic_fetch_add_explicit(&delivered, n, memory_order_relaxed);
}

typedef struct {
  char *buf;
  size_t len, cap;
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      return;
    }
    o->cap *= 2;
    o->buf = sb_xrealloc(o->buf, o->cap);
  }
}

char *sb_metrics_render(const sb_metrics_extra_t *x) {
  out_t o = {sb_xmalloc(16384), 0, 16384};
  o.buf[0] = '\0';
  put(&o, "# HELP solobase_http_requests_total HTTP requests answered.\n"
          "# TYPE solobase_http_requests_total counter\n");
  for (int r = 0; r < SB_ROUTE_N; r++)
    for (int m = 0; m < NMETHODS; m++)
      for (int s = 0; s < NSTATUSES; s++) {
        unsigned long n = atomic_load(&requests[r][m][s]);
        if (!n) continue;
        char status[8];
        if (statuses[s]) snprintf(status, sizeof status, "%d", statuses[s]);
        else snprintf(status, sizeof status, "other");
        put(&o, "solobase_http_requests_total{route=\"%s\",method=\"%s\",status=\"%s\"} %lu\n",
            routes[r], methods[m], status, n);
      }
  put(&o, "# HELP solobase_http_request_duration_seconds Time to answer HTTP requests.\n"
          "# TYPE solobase_http_request_duration_seconds histogram\n");
  for (int r = 0; r < SB_ROUTE_N; r++) {
    unsigned long cum = 0, total = 0;
    for (int b = 0; b <= NBOUNDS; b++) total += atomic_load(&buckets[r][b]);
    if (!total) continue;
    for (int b = 0; b <= NBOUNDS; b++) {
      cum += atomic_load(&buckets[r][b]);
      if (b < NBOUNDS)
        put(&o, "solobase_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %lu\n",
            routes[r], bounds[b], cum);
      else
        put(&o, "solobase_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %lu\n",
            routes[r], cum);
    }
    put(&o, "solobase_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", routes[r],
        (double)atomic_load(&duration_us[r]) / 1e6);
    put(&o, "solobase_http_request_duration_seconds_count{route=\"%s\"} %lu\n", routes[r], total);
  }
  put(&o, "# HELP solobase_jobs Jobs in the queue, by status (whole database).\n"
          "# TYPE solobase_jobs gauge\n");
  const char *js[] = {"queued", "running", "succeeded", "dead", "canceled"};
  long jv[] = {x->jobs_queued, x->jobs_running, x->jobs_succeeded, x->jobs_dead, x->jobs_canceled};
  for (size_t i = 0; i < SB_ARRAY_LEN(js); i++)
    if (jv[i] >= 0) put(&o, "solobase_jobs{status=\"%s\"} %ld\n", js[i], jv[i]);
  put(&o, "# HELP solobase_jobs_run_total Jobs this engine ran, by outcome.\n"
          "# TYPE solobase_jobs_run_total counter\n"
          "solobase_jobs_run_total{outcome=\"done\"} %lu\n"
          "solobase_jobs_run_total{outcome=\"retried\"} %lu\n"
          "solobase_jobs_run_total{outcome=\"failed\"} %lu\n",
      x->jobs_done, x->jobs_retried, x->jobs_failed);
  put(&o, "# HELP solobase_websocket_clients Websocket clients connected.\n"
          "# TYPE solobase_websocket_clients gauge\nsolobase_websocket_clients %ld\n",
      atomic_load(&ws_clients));
  put(&o, "# HELP solobase_events_delivered_total Events sent to websocket clients.\n"
          "# TYPE solobase_events_delivered_total counter\nsolobase_events_delivered_total %lu\n",
      atomic_load(&delivered));
  put(&o, "# HELP solobase_policy_decisions_total Policy calls answered.\n"
          "# TYPE solobase_policy_decisions_total counter\nsolobase_policy_decisions_total %lu\n"
          "# HELP solobase_policy_errors_total Policy calls that failed (errors, limits, "
          "contracts).\n# TYPE solobase_policy_errors_total counter\n"
          "solobase_policy_errors_total %lu\n"
          "# HELP solobase_policy_reloads_total Policy reloads.\n"
          "# TYPE solobase_policy_reloads_total counter\nsolobase_policy_reloads_total %lu\n",
      x->policy_decisions, x->policy_errors, x->policy_reloads);
  put(&o, "# HELP solobase_engine_leader 1 when this engine runs the scheduler.\n"
          "# TYPE solobase_engine_leader gauge\nsolobase_engine_leader %d\n",
      x->leader ? 1 : 0);
  return o.buf;
}

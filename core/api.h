/*
 * api.h: the HTTP API's routes, run on worker threads (docs/http-api.md).
 *
 * The libwebsockets thread (core/server.c) parses a request, hands it to a worker and
 * writes the answer back; everything that touches the database, a policy or JSON
 * happens here, on the worker's own connection, policy engine and Lua state. A
 * customer's reads name the token's user and run as the role sb_api_customer with
 * sb.user_id set, so that either the query or PostgreSQL row-level security alone
 * refuses other users' rows.
 */
#ifndef SB_API_H
#define SB_API_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth.h"
#include "db.h"
#include "metrics.h"
#include "policy.h"
#include "secrets.h"

#define SB_API_MAX_BODY (64 * 1024)

/* The columns every event query selects from instance_events e: seq, the event as the
 * JSON of docs/events.md (made by PostgreSQL), type, instance_id, user_id. */
#define SB_EVENT_COLUMNS                                                                    \
  "e.seq, json_build_object('id', e.seq, 'event_id', e.id, 'type', e.event_type, "          \
  "'instance_id', e.instance_id, 'user_id', e.user_id, 'shared_rds_id', e.shared_rds_id, "  \
  "'description', e.description, 'payload', e.payload, 'actor', e.actor, 'created_at', "    \
  "to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text, "      \
  "e.event_type, coalesce(e.instance_id::text, ''), coalesce(e.user_id::text, '')"

typedef struct sb_api_request {
  char method[8];
  char path[512];
  char query[1024];
  char token[128];         /* from Authorization: Bearer; "" when none */
  char content_type[128];
  char *body;              /* owned; NULL when none */
  size_t body_len;
  bool body_too_large;
} sb_api_request_t;

typedef struct sb_api_response {
  int status;
  char *body;              /* owned JSON (or text for /metrics) */
  size_t len;
  const char *content_type;
  char location[160];
  const char *allow; /* a 405's Allow header (static) */
  sb_route_t route;
} sb_api_response_t;

typedef struct sb_api_worker sb_api_worker_t;

/* What workers share: the policies, the keys, counters for /metrics. */
typedef struct sb_api_shared {
  const char *db_url;
  sb_policy_registry_t *policies;
  sb_keyring_t *keys;
  void (*engine_stats)(void *ud, sb_metrics_extra_t *x);
  void *engine_ud;
} sb_api_shared_t;

sb_api_worker_t *sb_api_worker_new(const sb_api_shared_t *shared, sb_error_t *err);
void sb_api_worker_free(sb_api_worker_t *w);

/* Answers n HTTP requests, resps[i] for reqs[i] (each filled, never left empty). The
 * reads of one instance (GET /v1/instances/{id}, what dashboards poll) go to the
 * database together as one libpq pipeline, each its own implicit transaction (its own
 * Sync, and for a customer its own role and user), so they cost one round trip and one
 * wake-up of the worker and of its PostgreSQL backend between them; every other
 * request is answered on its own. */
void sb_api_handle_batch(sb_api_worker_t *w, const sb_api_request_t *const *reqs,
                         sb_api_response_t *const *resps, int n);
/* True for the requests sb_api_handle_batch() reads together (GET /v1/instances/{id}):
 * a worker takes several of those at once, anything else alone, so that a slow request
 * never holds others back. */
bool sb_api_batchable(const sb_api_request_t *req);
void sb_api_response_free(sb_api_response_t *resp);

/* For the websocket side: checks a token. */
int sb_api_authenticate(sb_api_worker_t *w, const char *token, sb_principal_t *who,
                        sb_error_t *err);

/* The same for a token known by its digest (rechecking an open websocket's token). */
int sb_api_authenticate_digest(sb_api_worker_t *w, const char *sha256_hex, sb_principal_t *who,
                               sb_error_t *err);

/* 1 when the instance is visible to who (row-level security for customers), 0 when
 * not (err says so, SB404), -1 on a database failure. */
int sb_api_instance_visible(sb_api_worker_t *w, const sb_principal_t *who, const char *id,
                            sb_error_t *err);

/* Events after `after` (and before `before`, 0 for no bound) visible to who, as the
 * JSON of docs/events.md, at most `limit`. *oldest gets the oldest event id kept (0 when
 * the table is empty). Rows: seq, json, type, instance_id, user_id. */
PGresult *sb_api_events_page(sb_api_worker_t *w, const sb_principal_t *who, int64_t after,
                             int64_t before, int limit, int64_t *oldest, sb_error_t *err);

#endif

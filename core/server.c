/*
 * server.c: libwebsockets service loop, HTTP hand-off to API workers, websocket
 * sessions and the event hub (see server.h).
 *
 * Threads and what they own:
 *   loop       (the service thread) every wsi, every session, the event ring. Only it
 *              touches them, so none of them needs a lock.
 *   workers    an sb_api_worker_t each (connection, policy engine, Lua state). They take
 *              work from `queued` and put it back on `done`, waking the loop.
 *   listener   its own connection: LISTEN sb_events / sb_tokens; reads new events in
 *              commit order and hands them to the loop through `incoming`.
 *
 * Lifetimes (as the libwebsockets examples do it): a work item lives from the request
 * to the written answer; an http_session_t from a request to its answer; a ws_session_t
 * for the connection. Sessions are our own allocations, pointed to from lws's per-session
 * data, so a worker's answer for a connection that closed meanwhile finds a session
 * marked dead instead of freed memory.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libwebsockets.h>
#include <lauxlib.h>
#include <lualib.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "auth.h"
#include "config.h"
#include "log.h"
#include "luaconv.h"
#include "metrics.h"
#include "provision.h"
#include "util.h"

#define RING 8192          /* events kept in memory, shared by every client */
#define BACKLOG 4096       /* events a client may fall behind before overflow */
#define BATCH_BYTES 65536  /* largest events message (a single bigger event goes alone) */
#define MAX_SUBS 64
#define MAX_TYPES 16
#define MAX_OUTBOX 32
#define REPLAY_PAGE 500
#define AUTH_TIMEOUT_S 10

/* ---- subscriptions ---- */

typedef struct subscription {
  char id[64];
  char instance_id[37];
  char user_id[37];
  int ntypes;
  char (*types)[64];    /* ntypes patterns, owned */
} subscription_t;

/* A subscription waiting for its instance's ownership check. */
typedef struct pending_sub {
  subscription_t sub;
  bool has_last;
  int64_t last_id;
} pending_sub_t;

/* ---- work between the loop and the workers ---------------------------------------- */

typedef enum { WORK_HTTP, WORK_WS_AUTH, WORK_WS_RECHECK, WORK_WS_REPLAY, WORK_WS_CHECK } work_kind_t;

typedef struct work {
  work_kind_t kind;
  void *session;           /* http_session_t or ws_session_t; only the loop looks */
  uint64_t started_ns;
  sb_api_request_t req;    /* HTTP */
  sb_api_response_t resp;
  char token[128];         /* WS_AUTH */
  char sha[65];            /* WS_RECHECK: the token's digest */
  unsigned gen;            /* WS_RECHECK: the session's recheck it answers */
  sb_principal_t who;
  int ok;
  sb_error_t err;
  int64_t after, before;   /* WS_REPLAY: events in (after, before) */
  PGresult *rows;
  int64_t oldest;
  pending_sub_t check;     /* WS_CHECK */
  struct work *next;
} work_t;

typedef struct queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  work_t *head, *tail;
} queue_t;

static void queue_init(queue_t *q) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->head = q->tail = NULL;
}

/* Appends n items in order; true when the queue was empty before. */
static bool queue_push_all(queue_t *q, work_t *const *w, int n) {
  pthread_mutex_lock(&q->mu);
  bool was_empty = q->head == NULL;
  for (int i = 0; i < n; i++) {
    w[i]->next = NULL;
    if (q->tail) q->tail->next = w[i];
    else q->head = w[i];
    q->tail = w[i];
  }
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
  return was_empty;
}

static bool queue_push(queue_t *q, work_t *w) { return queue_push_all(q, &w, 1); }

/* Takes everything queued. */
static work_t *queue_take_all(queue_t *q) {
  pthread_mutex_lock(&q->mu);
  work_t *all = q->head;
  q->head = q->tail = NULL;
  pthread_mutex_unlock(&q->mu);
  return all;
}

static void work_free(work_t *w) {
  if (!w) return;
  free(w->req.body);
  sb_api_response_free(&w->resp);
  PQclear(w->rows);
  free(w->check.sub.types);
  explicit_bzero(w->token, sizeof w->token);
  explicit_bzero(w->req.token, sizeof w->req.token);
  free(w);
}

/* ---- events ----------------------------------------------------------------------- */

typedef struct event {
  int64_t seq;
  char *json;
  size_t len;
  char type[64];
  char instance_id[37];
  char user_id[37];
} event_t;

/* A token that changed (NOTIFY sb_tokens), by digest; "" for every token (after the
 * listener reconnected and may have missed some). */
typedef struct token_change {
  char sha[65];
  struct token_change *next;
} token_change_t;

/* A batch of new events from the listener. */
typedef struct arrival {
  event_t *events;
  int n;
  struct arrival *next;
} arrival_t;

/* ---- sessions ------------------------------------------------------------------------ */

typedef struct http_session {
  struct lws *wsi;
  bool submitted;       /* a worker has (or had) the request */
  bool dead;            /* the connection closed while a worker had its request */
  bool chunked;         /* a body without Content-Length: not read (411), then closed */
  bool counted;         /* in http_inflight: from its headers if it has a body */
  bool head;            /* HEAD: answered as GET, without the body */
  work_t *answer;       /* ready to write */
  sb_api_request_t req; /* being read (a POST body) */
  uint64_t started_ns;
} http_session_t;


typedef struct ws_session {
  struct lws *wsi;
  bool dead, closing;
  int close_code;
  char close_reason[64];
  bool authed, auth_pending;
  sb_principal_t who;
  bool rechecking;      /* its token changed: no events until the database confirms it */
  unsigned recheck_gen; /* the latest recheck asked for */
  uint64_t auth_deadline_ns; /* sb_now_ns() by which it must have authenticated */
  subscription_t *subs;
  int nsubs, subcap;
  bool everything;      /* an operator subscribed to all events */
  unsigned paused;      /* why its messages are not read now: PAUSE_* */
  bool streaming;       /* has a cursor: events flow */
  uint64_t cursor;      /* next ring position to look at */
  int64_t last_sent;    /* id of the last event sent */
  bool replaying;       /* catching up from the database */
  bool replay_pending;  /* a page is being read */
  PGresult *replay_rows;
  int replay_row;
  int64_t replay_before;  /* the page covers ids below this */
  bool announce_replayed;
  char *outbox[MAX_OUTBOX];
  int nout;
  bool broken;          /* a write failed outside its writable callback: close */
  char *rx;             /* a message being received */
  size_t rxlen, rxcap;
  bool rx_too_big;
  int inflight;         /* work items that refer to this session */
  struct ws_session *prev, *next;
} ws_session_t;

/* A write buffer with LWS_PRE bytes of room before p + LWS_PRE. */
typedef struct buf {
  unsigned char *p;
  size_t cap;
} buf_t;

struct sb_httpd {
  sb_engine_t *engine;
  sb_api_shared_t shared;
  struct lws_context *ctx;
  pthread_t loop_thread, listener_thread;
  pthread_t *workers;
  int nworkers;
  queue_t queued, done;
  pthread_mutex_t incoming_mu;
  arrival_t *incoming;
  token_change_t *token_changes; /* under incoming_mu, like incoming */
  _Atomic bool stopping, stopped;
  int listener_stop_fd;
  int port;

  /* The loop's own state. */
  lua_State *L;                 /* lua-cjson for websocket messages */
  event_t ring[RING];
  uint64_t head;                /* events ever appended; positions are [head - RING, head) */
  int64_t ring_floor;           /* every event with a greater id is in the ring */
  int64_t last_seq;             /* newest id appended */
  ws_session_t *sessions;
  int nsessions, http_inflight;
  buf_t batch;                  /* the message being written */
  buf_t all_batch;              /* the cached everything-batch, shared by operators */
  uint64_t all_batch_from, all_batch_to; /* its ring positions */
  size_t all_batch_len;
  bool closing_all;             /* shutdown: every websocket was asked to close */
  lws_sorted_usec_list_t pass_sul; /* a fan-out pass put off by push_all() */
  bool pass_scheduled;
  uint64_t next_pass_ns;        /* no fan-out pass before this (events_fanout_busy_pct) */
  lws_sorted_usec_list_t trim_sul; /* trim_memory(), every TRIM_EVERY_US */
};

/* ---- the ring ----------------------------------------------------------------------------- */

static event_t *at(sb_httpd_t *s, uint64_t pos) { return &s->ring[pos % RING]; }
static uint64_t oldest_pos(const sb_httpd_t *s) { return s->head > RING ? s->head - RING : 0; }

static void ring_append(sb_httpd_t *s, event_t *e) {
  event_t *slot = at(s, s->head);
  if (s->head >= RING) {
    /* Evicting: events up to this one are now only in the database. */
    s->ring_floor = slot->seq;
    free(slot->json);
  }
  *slot = *e;
  s->head++;
  s->last_seq = e->seq;
}

/* Where a client catching up may join the ring: every event with a greater id is in
 * the ring and within BACKLOG / 2 of the newest, so one that joins is not cut off for
 * being too far behind as soon as it joins (half the backlog is left for what arrives
 * while it catches up). A client further back replays from the database first. */
static int64_t join_floor(sb_httpd_t *s) {
  uint64_t keep = BACKLOG / 2;
  if (s->head - oldest_pos(s) > keep) return at(s, s->head - keep - 1)->seq;
  return s->ring_floor;
}

/* First position holding an event with id > seq (head when none). */
static uint64_t position_after(sb_httpd_t *s, int64_t seq) {
  uint64_t lo = oldest_pos(s), hi = s->head;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (at(s, mid)->seq <= seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* ---- filters ------------------------------------------------------------------------------- */

static bool type_matches(const char *pattern, const char *type) {
  size_t n = strlen(pattern);
  if (n == 1 && pattern[0] == '*') return true;
  if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '.')
    return strncmp(pattern, type, n - 1) == 0; /* "server.*" matches "server.x" */
  return strcmp(pattern, type) == 0;
}

static bool event_visible(const ws_session_t *ws, const char *user_id) {
  return ws->who.operator || (user_id[0] && strcmp(user_id, ws->who.user_id) == 0);
}

static bool sub_matches(const subscription_t *sub, const char *type, const char *instance,
                        const char *user) {
  if (sub->instance_id[0] && strcmp(sub->instance_id, instance) != 0) return false;
  if (sub->user_id[0] && strcmp(sub->user_id, user) != 0) return false;
  if (sub->ntypes == 0) return true;
  for (int i = 0; i < sub->ntypes; i++)
    if (type_matches(sub->types[i], type)) return true;
  return false;
}

static bool session_wants(const ws_session_t *ws, const char *type, const char *instance,
                          const char *user) {
  if (!event_visible(ws, user)) return false;
  for (int i = 0; i < ws->nsubs; i++)
    if (sub_matches(&ws->subs[i], type, instance, user)) return true;
  return false;
}

/* An operator subscribed to everything: its events messages can be shared. */
static bool compute_everything(const ws_session_t *ws) {
  if (!ws->who.operator) return false;
  for (int i = 0; i < ws->nsubs; i++) {
    const subscription_t *sub = &ws->subs[i];
    if (!sub->instance_id[0] && !sub->user_id[0] &&
        (sub->ntypes == 0 || (sub->ntypes == 1 && strcmp(sub->types[0], "*") == 0)))
      return true;
  }
  return false;
}

/* ---- websocket output -------------------------------------------------------------------- */

/* The client's messages are not read while a worker has one of them (auth, an
 * ownership check: a message sent right after `auth` is read once the answer is in), or
 * while its answers wait to be written (a client that sends faster than it reads is
 * slowed down rather than losing answers). */
enum { PAUSE_WORKER = 1, PAUSE_OUTBOX = 2 };
#define OUTBOX_HIGH (MAX_OUTBOX - 8) /* stop reading: room left for what is being read */
#define OUTBOX_LOW 8                 /* read again */

static void pause_rx(ws_session_t *ws, unsigned why) {
  if (!ws->paused) lws_rx_flow_control(ws->wsi, 0);
  ws->paused |= why;
}

static void resume_rx(ws_session_t *ws, unsigned why) {
  if (!(ws->paused & why)) return;
  ws->paused &= ~why;
  if (!ws->paused) lws_rx_flow_control(ws->wsi, 1);
}

static void ws_queue(ws_session_t *ws, char *msg) {
  if (ws->nout == MAX_OUTBOX) {
    /* Not reached while reading pauses at OUTBOX_HIGH; the bound stays. */
    sb_warn("events", "a websocket's outbox is full; an answer is dropped");
    free(msg);
    return;
  }
  ws->outbox[ws->nout++] = msg;
  if (ws->nout >= OUTBOX_HIGH) pause_rx(ws, PAUSE_OUTBOX);
  lws_callback_on_writable(ws->wsi);
}

/* Encodes the table on top of the loop's Lua stack and queues it; pops it. */
static void ws_queue_table(sb_httpd_t *s, ws_session_t *ws) {
  char *json = sb_lua_json_encode(s->L, -1, NULL, NULL);
  lua_pop(s->L, 1);
  if (json) ws_queue(ws, json);
}

static void ws_error(sb_httpd_t *s, ws_session_t *ws, const char *code, const char *sub,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void ws_error(sb_httpd_t *s, ws_session_t *ws, const char *code, const char *sub,
                     const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_State *L = s->L;
  lua_createtable(L, 0, 4);
  lua_pushliteral(L, "error");
  lua_setfield(L, -2, "type");
  lua_pushstring(L, code);
  lua_setfield(L, -2, "code");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  if (sub) {
    lua_pushstring(L, sub);
    lua_setfield(L, -2, "id");
  }
  ws_queue_table(s, ws);
}

static void ws_close(ws_session_t *ws, int code, const char *reason) {
  ws->closing = true;
  ws->close_code = code;
  snprintf(ws->close_reason, sizeof ws->close_reason, "%s", reason);
  lws_callback_on_writable(ws->wsi);
}

static const char batch_open[] = "{\"type\":\"events\",\"events\":[";
static const char batch_close[] = "]}";

static unsigned char *ensure(buf_t *b, size_t need) {
  if (need > b->cap) {
    b->cap = need * 2;
    b->p = sb_xrealloc(b->p, LWS_PRE + b->cap);
  }
  return b->p + LWS_PRE;
}

/* Starts an events message in b; returns its length so far. */
static size_t batch_start(buf_t *b) {
  memcpy(ensure(b, BATCH_BYTES + 64), batch_open, sizeof batch_open - 1);
  return sizeof batch_open - 1;
}


/* Appends an event to the batch being built; false when it would not fit (and the
 * batch is not empty). */
static bool batch_add(buf_t *buf, size_t *len, int *count, const char *json, size_t jlen) {
  size_t need = *len + jlen + 1 + sizeof batch_close;
  if (*count > 0 && need > BATCH_BYTES) return false;
  unsigned char *b = ensure(buf, need);
  if (*count > 0) b[(*len)++] = ',';
  memcpy(b + *len, json, jlen);
  *len += jlen;
  (*count)++;
  return true;
}

static int batch_send(sb_httpd_t *s, ws_session_t *ws, size_t len, int count) {
  unsigned char *b = s->batch.p + LWS_PRE;
  memcpy(b + len, batch_close, sizeof batch_close - 1);
  len += sizeof batch_close - 1;
  if (lws_write(ws->wsi, b, len, LWS_WRITE_TEXT) < (int)len) return -1;
  sb_metrics_events_delivered((unsigned long)count);
  return 0;
}

/* Sends the next rows of a database replay: 1 when it wrote, 0 when nothing was to be
 * written, -1: the connection failed. */
static int send_replay_rows(sb_httpd_t *s, ws_session_t *ws) {
  size_t len = batch_start(&s->batch);
  int count = 0;
  PGresult *r = ws->replay_rows;
  int n = PQntuples(r);
  while (ws->replay_row < n) {
    int i = ws->replay_row;
    int64_t seq = atoll(PQgetvalue(r, i, 0));
    if (seq > ws->last_sent && session_wants(ws, PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4))) {
      if (!batch_add(&s->batch, &len, &count, PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1)))
        break;
    }
    if (seq > ws->last_sent) ws->last_sent = seq;
    ws->replay_row++;
  }
  if (count && batch_send(s, ws, len, count) != 0) return -1;
  return count > 0;
}

static void request_replay(sb_httpd_t *s, ws_session_t *ws);

/* Streams from the ring: one events message of what this client wants. */
static int send_from_ring(sb_httpd_t *s, ws_session_t *ws) {
  if (ws->cursor < oldest_pos(s) || s->head - ws->cursor > BACKLOG) {
    lua_State *L = s->L;
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "overflow");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, ws->last_sent);
    lua_setfield(L, -2, "last_id");
    ws_queue_table(s, ws);
    ws->streaming = false;
    ws_close(ws, 4008, "too slow: resume from last_id");
    return 0;
  }
  /* Operators that want everything get one shared message per range of the ring. */
  if (ws->everything && ws->cursor < s->head) {
    uint64_t from = ws->cursor;
    if (s->all_batch_from != from || s->all_batch_to <= from) {
      size_t len = batch_start(&s->all_batch);
      int count = 0;
      uint64_t pos = from;
      for (; pos < s->head; pos++) {
        event_t *e = at(s, pos);
        if (!batch_add(&s->all_batch, &len, &count, e->json, e->len)) break;
      }
      memcpy(s->all_batch.p + LWS_PRE + len, batch_close, sizeof batch_close - 1);
      s->all_batch_from = from;
      s->all_batch_to = pos;
      s->all_batch_len = len + sizeof batch_close - 1;
    }
    /* Events already sent (after a replay) are below last_sent: skip the shared form. */
    if (at(s, from)->seq > ws->last_sent) {
      if (lws_write(ws->wsi, s->all_batch.p + LWS_PRE, s->all_batch_len, LWS_WRITE_TEXT) <
          (int)s->all_batch_len)
        return -1;
      sb_metrics_events_delivered((unsigned long)(s->all_batch_to - from));
      ws->cursor = s->all_batch_to;
      ws->last_sent = at(s, ws->cursor - 1)->seq;
      if (ws->cursor < s->head) lws_callback_on_writable(ws->wsi);
      return 0;
    }
  }
  size_t len = batch_start(&s->batch);
  int count = 0;
  while (ws->cursor < s->head) {
    event_t *e = at(s, ws->cursor);
    if (e->seq > ws->last_sent && session_wants(ws, e->type, e->instance_id, e->user_id)) {
      if (!batch_add(&s->batch, &len, &count, e->json, e->len)) break;
    }
    if (e->seq > ws->last_sent) ws->last_sent = e->seq;
    ws->cursor++;
  }
  if (count && batch_send(s, ws, len, count) != 0) return -1;
  if (ws->cursor < s->head) lws_callback_on_writable(ws->wsi);
  return 0;
}

static int ws_writable(sb_httpd_t *s, ws_session_t *ws) {
  if (ws->broken) return -1;
  if (ws->nout > 0) {
    char *msg = ws->outbox[0];
    memmove(ws->outbox, ws->outbox + 1, (size_t)(ws->nout - 1) * sizeof *ws->outbox);
    ws->nout--;
    if (ws->nout <= OUTBOX_LOW) resume_rx(ws, PAUSE_OUTBOX);
    size_t len = strlen(msg);
    memcpy(ensure(&s->batch, len + 1), msg, len);
    free(msg);
    if (lws_write(ws->wsi, s->batch.p + LWS_PRE, len, LWS_WRITE_TEXT) < (int)len) return -1;
    lws_callback_on_writable(ws->wsi);
    return 0;
  }
  if (ws->closing) {
    lws_close_reason(ws->wsi, (enum lws_close_status)ws->close_code,
                     (unsigned char *)ws->close_reason, strlen(ws->close_reason));
    return -1;
  }
  if (!ws->streaming || ws->rechecking) return 0;
  if (ws->replay_rows) {
    int wrote = send_replay_rows(s, ws);
    if (wrote < 0) return -1;
    if (ws->replay_row < PQntuples(ws->replay_rows)) {
      lws_callback_on_writable(ws->wsi);
      return 0;
    }
    bool full_page = PQntuples(ws->replay_rows) == REPLAY_PAGE;
    PQclear(ws->replay_rows);
    ws->replay_rows = NULL;
    /* A page that is not full read everything below replay_before that this client may
     * see: that is its position now, though a customer's last event may be far below. */
    if (!full_page && ws->last_sent < ws->replay_before - 1) ws->last_sent = ws->replay_before - 1;
    if (full_page || ws->last_sent < join_floor(s)) {
      request_replay(s, ws);
      return 0;
    }
    ws->replaying = false;
    ws->cursor = position_after(s, ws->last_sent);
    /* One write per writable callback: the ring's part goes in the next one. */
    if (wrote) {
      lws_callback_on_writable(ws->wsi);
      return 0;
    }
  }
  if (ws->replaying) return 0; /* a page is on its way */
  /* A fan-out pass is due: it writes this session too (ws_push), with whatever else
   * arrives until then, rather than a send now and another then. */
  if (s->pass_scheduled && !ws->announce_replayed) return 0;
  if (send_from_ring(s, ws) != 0) return -1;
  if (ws->announce_replayed && ws->cursor >= s->head && ws->streaming) {
    ws->announce_replayed = false;
    lua_State *L = s->L;
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "replayed");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, ws->last_sent);
    lua_setfield(L, -2, "last_id");
    ws_queue_table(s, ws);
  }
  return 0;
}

/* New events are in the ring: a session with nothing else to write gets them now,
 * written from the arrival, not from a writable callback. With 1,000 subscribers that
 * is one send() each per arrival and nothing else: no POLLOUT to set and clear, no poll
 * round in between. libwebsockets allows writes outside the writable callback on the
 * service thread; a send the socket cannot take whole is kept by lws (partial
 * buffered), which flushes it when the socket drains, and until then this session goes
 * the writable way. Anything else (replies queued, a replay, a recheck, closing) goes
 * the writable way too, so the order of what a client receives is unchanged. */
static void ws_push(sb_httpd_t *s, ws_session_t *ws) {
  if (!ws->streaming || ws->replaying) return;
  if (ws->nout || ws->closing || ws->rechecking || ws->broken || ws->announce_replayed ||
      lws_partial_buffered(ws->wsi)) {
    lws_callback_on_writable(ws->wsi);
    return;
  }
  if (send_from_ring(s, ws) != 0) {
    ws->broken = true; /* the writable callback closes it */
    lws_callback_on_writable(ws->wsi);
  }
}

/* ---- fan-out passes --------------------------------------------------------------------- */

/* A pass: every idle session gets what the ring holds for it (ws_push). The next pass
 * may start no sooner than events_fanout_busy_pct allows: after a pass of d, d * (100 -
 * pct) / pct later (d at the default 50). A pass over 1,000 websockets is 1,000 send()s,
 * some 6 ms of a core here; passes back to back would take the loop thread whole, and on
 * a machine it shares with the database and the clients that is past what the machine
 * can do: the clients fall behind, sends go partial and cost more, and the delay grows
 * for seconds (1,000 x 1,000 events/s on the 2-core benchmark machine: paced, the p99
 * was 2-5 times lower in every one of 4 interleaved runs; docs/benchmarks.md). Paced,
 * what commits during the pause goes in the next pass, so a busier stream makes larger
 * messages, not more of them. Nothing waits when passes are short (few subscribers) or
 * the stream is quiet; no pause is longer than PASS_PAUSE_MAX_NS. */
#define PASS_PAUSE_MAX_NS 20000000u
static uint64_t thread_cpu_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void push_pass(sb_httpd_t *s) {
  uint64_t c0 = thread_cpu_ns();
  for (ws_session_t *ws = s->sessions; ws; ws = ws->next) ws_push(s, ws);
  uint64_t pct = (uint64_t)sb_config()->events_fanout_busy_pct;
  /* The loop's own time (CPU), not the clock's: a pass the scheduler held up would
   * otherwise hold up the next one as long again. */
  uint64_t pause = (thread_cpu_ns() - c0) * (100 - pct) / pct;
  s->next_pass_ns = sb_now_ns() + (pause < PASS_PAUSE_MAX_NS ? pause : PASS_PAUSE_MAX_NS);
}

static void pass_due(lws_sorted_usec_list_t *sul) {
  sb_httpd_t *s = lws_container_of(sul, sb_httpd_t, pass_sul);
  s->pass_scheduled = false;
  push_pass(s);
}

/* New events are in the ring: a pass now, or when the last one allows. */
static void push_all(sb_httpd_t *s) {
  if (s->pass_scheduled) return; /* the pass due takes these too */
  uint64_t now = sb_now_ns();
  if (now >= s->next_pass_ns) {
    push_pass(s);
    return;
  }
  s->pass_scheduled = true;
  lws_sul_schedule(s->ctx, 0, &s->pass_sul, pass_due,
                   (lws_usec_t)((s->next_pass_ns - now + 999) / 1000));
}

/* Every TRIM_EVERY_US: memory a burst left free inside malloc's arenas goes back to the
 * system. Clients that fall behind leave libwebsockets holding what their sockets did not
 * take (up to a message each), and large batches come and go; freed, that memory stays
 * in the arenas (the engine's RSS stayed at 82 MiB after the benchmark's overload rounds,
 * 21 MiB before them, until the process ended). malloc_trim() walks the arenas, so only
 * when more than TRIM_ABOVE_BYTES lies free. */
#define TRIM_EVERY_US (10 * LWS_US_PER_SEC)
#define TRIM_ABOVE_BYTES ((size_t)8 << 20)
static void trim_memory(lws_sorted_usec_list_t *sul) {
  sb_httpd_t *s = lws_container_of(sul, sb_httpd_t, trim_sul);
  struct mallinfo2 mi = mallinfo2();
  if (mi.fordblks > TRIM_ABOVE_BYTES) malloc_trim(0);
  lws_sul_schedule(s->ctx, 0, sul, trim_memory, TRIM_EVERY_US);
}

/* ---- websocket input -------------------------------------------------------------------- */

static void hand_to_workers(sb_httpd_t *s, work_t *w) { queue_push(&s->queued, w); }


static void request_auth(sb_httpd_t *s, ws_session_t *ws, const char *token) {
  work_t *w = sb_xcalloc(1, sizeof *w);
  w->kind = WORK_WS_AUTH;
  w->session = ws;
  snprintf(w->token, sizeof w->token, "%s", token);
  ws->inflight++;
  ws->auth_pending = true;
  pause_rx(ws, PAUSE_WORKER);
  hand_to_workers(s, w);
}

/* The session's token changed: stop its events and ask the database whether the token
 * is still good (deliver() closes the session with 4001 if not). */
static void request_recheck(sb_httpd_t *s, ws_session_t *ws) {
  work_t *w = sb_xcalloc(1, sizeof *w);
  w->kind = WORK_WS_RECHECK;
  w->session = ws;
  memcpy(w->sha, ws->who.token_sha, sizeof w->sha);
  w->gen = ++ws->recheck_gen;
  ws->inflight++;
  ws->rechecking = true;
  hand_to_workers(s, w);
}

/* Closes the session when its token expires (the timer also serves the auth deadline
 * before authentication). */
static void arm_expiry(ws_session_t *ws) {
  /* A token without expiry needs no timer: the authentication timer may still fire,
   * and finds nothing to do. (No LWS_SET_TIMER_USEC_CANCEL: libwebsockets 4.1 schedules
   * it as "now", so cancelling from LWS_CALLBACK_TIMER made the timer fire again at once,
   * for ever, and with 1,000 sessions a sorted insert each time ate a core.) */
  if (!ws->who.expires_at) return;
  time_t left = ws->who.expires_at - time(NULL);
  lws_set_timer_usecs(ws->wsi, (lws_usec_t)(left > 0 ? left : 0) * LWS_USEC_PER_SEC);
}

static void request_replay(sb_httpd_t *s, ws_session_t *ws) {
  work_t *w = sb_xcalloc(1, sizeof *w);
  w->kind = WORK_WS_REPLAY;
  w->session = ws;
  w->after = ws->last_sent;
  w->before = join_floor(s) + 1; /* the ring has everything after it, near enough */
  w->who = ws->who;
  ws->inflight++;
  ws->replaying = ws->replay_pending = true;
  hand_to_workers(s, w);
}

/* Reads filter fields from the table at idx into sub; false after queueing an error. */
static bool read_filter(sb_httpd_t *s, ws_session_t *ws, int idx, subscription_t *sub) {
  lua_State *L = s->L;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
    bool ok = true;
    if (strcmp(k, "instance_id") == 0 || strcmp(k, "user_id") == 0) {
      /* Compared as the database writes them: lower case. */
      ok = lua_type(L, -1) == LUA_TSTRING &&
           sb_uuid_canonical(lua_tostring(L, -1), lua_rawlen(L, -1),
                             strcmp(k, "user_id") == 0 ? sub->user_id : sub->instance_id);
    } else if (strcmp(k, "types") == 0) {
      /* An array of 1 to MAX_TYPES patterns: not an object, not empty (which would
       * read as "no type filter", the opposite of what it says). */
      ok = lua_istable(L, -1) && lua_rawlen(L, -1) >= 1 && lua_rawlen(L, -1) <= MAX_TYPES &&
           !sub->types;
      if (ok) {
        lua_Integer keys = 0;
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) keys++;
        ok = keys == (lua_Integer)lua_rawlen(L, -1);
      }
      if (ok) sub->types = sb_xcalloc(lua_rawlen(L, -1) + 1, sizeof *sub->types);
      for (lua_Integer i = 1; ok && i <= (lua_Integer)lua_rawlen(L, -1); i++) {
        ok = lua_rawgeti(L, -1, i) == LUA_TSTRING && lua_rawlen(L, -1) < 64;
        if (ok) snprintf(sub->types[sub->ntypes++], 64, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
      }
    } else {
      lua_pop(L, 2);
      ws_error(s, ws, "bad_message", sub->id, "unknown filter field '%.40s' (instance_id, user_id, types)", k);
      return false;
    }
    lua_pop(L, 1);
    if (!ok) {
      lua_pop(L, 1);
      ws_error(s, ws, "bad_message", sub->id,
               "filter field '%s' is not valid (instance_id and user_id: uuids; types: an "
               "array of 1 to %d strings under 64 characters)", k, MAX_TYPES);
      return false;
    }
  }
  if (!ws->who.operator && sub->user_id[0] && strcmp(sub->user_id, ws->who.user_id) != 0) {
    ws_error(s, ws, "forbidden", sub->id, "a customer token sees its own user's events only");
    return false;
  }
  return true;
}

static void subscription_free(subscription_t *sub) {
  free(sub->types);
  sub->types = NULL;
}

static void subs_clear(ws_session_t *ws) {
  for (int i = 0; i < ws->nsubs; i++) subscription_free(&ws->subs[i]);
  ws->nsubs = 0;
  ws->everything = false;
}


/* Adds a checked subscription (taking sub's allocations) and starts the stream if it is
 * the connection's first. */
static void finish_subscribe(sb_httpd_t *s, ws_session_t *ws, pending_sub_t *p) {
  lua_State *L = s->L;
  if (ws->nsubs == ws->subcap) {
    ws->subcap = ws->subcap ? ws->subcap * 2 : 2;
    ws->subs = sb_xrealloc(ws->subs, (size_t)ws->subcap * sizeof *ws->subs);
  }
  ws->subs[ws->nsubs++] = p->sub;
  p->sub.types = NULL;
  ws->everything = compute_everything(ws);
  /* Kept as given even when this engine has not read that far yet: a client that moves
   * from another engine may have seen events this one reads a few ms later, and they
   * must not come twice. The events after it follow as they are read. */
  int64_t last_id = p->last_id;

  lua_createtable(L, 0, 3);
  lua_pushliteral(L, "subscribed");
  lua_setfield(L, -2, "type");
  lua_pushstring(L, ws->subs[ws->nsubs - 1].id);
  lua_setfield(L, -2, "id");
  lua_pushinteger(L, ws->streaming ? ws->last_sent : p->has_last ? last_id : s->last_seq);
  lua_setfield(L, -2, "from");
  ws_queue_table(s, ws);
  if (ws->streaming) return;
  ws->streaming = true;
  if (!p->has_last) {
    ws->last_sent = s->last_seq;
    ws->cursor = s->head;
    return;
  }
  ws->last_sent = last_id;
  ws->announce_replayed = true;
  if (last_id >= join_floor(s)) {
    ws->cursor = position_after(s, last_id);
    lws_callback_on_writable(ws->wsi);
  } else {
    request_replay(s, ws); /* older than the ring: from the database first */
  }
}

static void handle_subscribe(sb_httpd_t *s, ws_session_t *ws, int msg) {
  lua_State *L = s->L;
  pending_sub_t p = {0};
  subscription_t *sub = &p.sub;
  if (lua_getfield(L, msg, "id") != LUA_TSTRING || lua_rawlen(L, -1) == 0 || lua_rawlen(L, -1) >= 64) {
    lua_pop(L, 1);
    return ws_error(s, ws, "bad_message", NULL, "subscribe needs an id (a string of 1 to 63 characters)");
  }
  snprintf(sub->id, sizeof sub->id, "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  for (int i = 0; i < ws->nsubs; i++)
    if (strcmp(ws->subs[i].id, sub->id) == 0)
      return ws_error(s, ws, "bad_message", sub->id, "a subscription %s exists", sub->id);
  if (ws->nsubs == MAX_SUBS)
    return ws_error(s, ws, "too_many_subscriptions", sub->id, "at most %d subscriptions", MAX_SUBS);
  int t = lua_getfield(L, msg, "filter");
  if (t != LUA_TNIL && t != LUA_TTABLE) {
    lua_pop(L, 1);
    return ws_error(s, ws, "bad_message", sub->id, "filter must be an object");
  }
  if (t == LUA_TTABLE && !read_filter(s, ws, lua_gettop(L), sub)) {
    lua_pop(L, 1);
    return subscription_free(sub);
  }
  lua_pop(L, 1);
  t = lua_getfield(L, msg, "last_id");
  if (t != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0) {
      lua_pop(L, 1);
      ws_error(s, ws, "bad_message", sub->id, "last_id must be a non-negative integer");
      return subscription_free(sub);
    }
    p.has_last = true;
    p.last_id = (int64_t)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
  if (p.has_last && ws->streaming) {
    ws_error(s, ws, "bad_message", sub->id, "last_id applies to the first subscription of a connection");
    return subscription_free(sub);
  }
  if (!ws->who.operator && sub->instance_id[0]) {
    /* A customer names an instance: it must be theirs (row-level security decides). */
    work_t *w = sb_xcalloc(1, sizeof *w);
    w->kind = WORK_WS_CHECK;
    w->session = ws;
    w->who = ws->who;
    w->check = p;
    ws->inflight++;
    pause_rx(ws, PAUSE_WORKER);
    hand_to_workers(s, w);
    return;
  }
  finish_subscribe(s, ws, &p);
}

/* The first field of the message at msg not among `allowed` into out; false when none. */
static bool unknown_field(lua_State *L, int msg, const char *allowed, char *out, size_t len) {
  lua_pushnil(L);
  while (lua_next(L, msg)) {
    lua_pop(L, 1); /* the value */
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!k || !sb_word_in(allowed, k)) {
      snprintf(out, len, "%s", k ? k : "(not a string)");
      lua_pop(L, 1); /* the key */
      return true;
    }
  }
  return false;
}

static void handle_message(sb_httpd_t *s, ws_session_t *ws, const char *text, size_t len) {
  lua_State *L = s->L;
  int top = lua_gettop(L);
  sb_error_t err;
  if (sb_lua_json_decode(L, text, len, &err) != 0 || !lua_istable(L, -1)) {
    lua_settop(L, top);
    return ws_error(s, ws, "bad_message", NULL, "messages are JSON objects");
  }
  int msg = lua_gettop(L);
  const char *type = lua_getfield(L, msg, "type") == LUA_TSTRING ? lua_tostring(L, -1) : "";
  /* The fields each type takes (docs/events.md); anything else is refused. */
  const char *fields = strcmp(type, "auth") == 0          ? "type token"
                       : strcmp(type, "ping") == 0        ? "type"
                       : strcmp(type, "subscribe") == 0   ? "type id filter last_id"
                       : strcmp(type, "unsubscribe") == 0 ? "type id"
                                                          : NULL;
  char bad[64];
  if (fields && unknown_field(L, msg, fields, bad, sizeof bad)) {
    ws_error(s, ws, "bad_message", NULL, "unknown field '%s' (%s takes: %s)", bad, type, fields);
  } else if (strcmp(type, "auth") == 0) {
    if (ws->authed || ws->auth_pending) {
      ws_error(s, ws, "bad_message", NULL, "already authenticated");
    } else if (lua_getfield(L, msg, "token") != LUA_TSTRING) {
      ws_error(s, ws, "bad_message", NULL, "auth needs a token");
    } else {
      request_auth(s, ws, lua_tostring(L, -1));
    }
  } else if (strcmp(type, "ping") == 0) {
    ws_queue(ws, sb_xstrdup("{\"type\":\"pong\"}"));
  } else if (!ws->authed) {
    ws_error(s, ws, "unauthorized", NULL, "authenticate first: {\"type\": \"auth\", \"token\": ...}");
  } else if (strcmp(type, "subscribe") == 0) {
    handle_subscribe(s, ws, msg);
  } else if (strcmp(type, "unsubscribe") == 0 && lua_getfield(L, msg, "id") != LUA_TSTRING) {
    ws_error(s, ws, "bad_message", NULL, "unsubscribe needs the id of a subscription (a string)");
  } else if (strcmp(type, "unsubscribe") == 0) {
    const char *id = lua_tostring(L, -1);
    int found = -1;
    for (int i = 0; i < ws->nsubs; i++)
      if (strcmp(ws->subs[i].id, id) == 0) found = i;
    if (found < 0) {
      ws_error(s, ws, "unknown_subscription", id, "no subscription %.63s", id);
    } else {
      subscription_free(&ws->subs[found]);
      ws->subs[found] = ws->subs[--ws->nsubs];
      ws->everything = compute_everything(ws);
      lua_createtable(L, 0, 2);
      lua_pushliteral(L, "unsubscribed");
      lua_setfield(L, -2, "type");
      lua_pushstring(L, id);
      lua_setfield(L, -2, "id");
      ws_queue_table(s, ws);
    }
  } else {
    ws_error(s, ws, "bad_message", NULL, "unknown message type '%.40s'", type);
  }
  lua_settop(L, top);
}

/* ---- worker answers ---------------------------------------------------------------------- */

static void ws_session_release(sb_httpd_t *s, ws_session_t *ws);

/* An HTTP answer made without a worker (shutting down, no database), in the error
 * document of core/api.c. */
static void answer_here(sb_api_response_t *r, int status, const char *json) {
  r->status = status;
  r->body = sb_xstrdup(json);
  r->len = strlen(json);
  r->content_type = "application/json";
  r->route = SB_ROUTE_UNKNOWN;
}

static void deliver(sb_httpd_t *s, work_t *w) {
  if (w->kind == WORK_HTTP) {
    http_session_t *hs = w->session;
    if (hs->dead) {
      s->http_inflight--; /* the connection closed before its answer */
      free(hs);
      work_free(w);
      return;
    }
    hs->answer = w;
    lws_callback_on_writable(hs->wsi);
    return;
  }
  ws_session_t *ws = w->session;
  ws->inflight--;
  if (ws->dead) {
    ws_session_release(s, ws);
    work_free(w);
    return;
  }
  if (w->kind == WORK_WS_CHECK) {
    resume_rx(ws, PAUSE_WORKER);
    if (w->ok) {
      finish_subscribe(s, ws, &w->check);
    } else if (strcmp(w->err.sqlstate, SB_ERR_NOT_FOUND) == 0) {
      ws_error(s, ws, "not_found", w->check.sub.id, "no instance %s", w->check.sub.instance_id);
    } else {
      ws_error(s, ws, "unavailable", w->check.sub.id, "cannot check the instance now; try again");
    }
  } else if (w->kind == WORK_WS_RECHECK) {
    /* Fail closed: any answer but "still valid" ends the session. */
    if (w->ok && w->gen == ws->recheck_gen) {
      ws->rechecking = false;
      ws->who = w->who;
      arm_expiry(ws);
      lws_callback_on_writable(ws->wsi);
    } else if (!w->ok && strcmp(w->err.sqlstate, "SB401") == 0) {
      ws_close(ws, 4001, "token no longer valid");
    } else if (!w->ok) {
      ws_close(ws, 1013, "cannot recheck the token; reconnect");
    }
  } else if (w->kind == WORK_WS_AUTH) {
    resume_rx(ws, PAUSE_WORKER);
    ws->auth_pending = false;
    if (w->ok) {
      ws->authed = true;
      ws->who = w->who;
      arm_expiry(ws);
      lua_State *L = s->L;
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "authenticated");
      lua_setfield(L, -2, "type");
      lua_pushstring(L, w->who.user_id);
      lua_setfield(L, -2, "user_id");
      lua_pushstring(L, w->who.operator ? "operator" : "customer");
      lua_setfield(L, -2, "scope");
      ws_queue_table(s, ws);
    } else {
      if (strcmp(w->err.sqlstate, "SB401") == 0)
        ws_error(s, ws, "unauthorized", NULL, "%s", w->err.msg);
      else
        ws_error(s, ws, "unavailable", NULL, "cannot check the token now; try again");
      /* The deadline's timer found the check in flight and let it be: past the
       * deadline, a failed check ends the connection, or it could stay for ever. */
      if (sb_now_ns() >= ws->auth_deadline_ns) ws_close(ws, 4401, "not authenticated");
    }
  } else { /* WS_REPLAY */
    ws->replay_pending = false;
    if (!w->rows) {
      ws_error(s, ws, "unavailable", NULL, "cannot read past events now; resume again later");
      ws->streaming = false;
    } else if (w->oldest > 0 && w->after < w->oldest - 1) {
      lua_State *L = s->L;
      lua_createtable(L, 0, 3);
      lua_pushliteral(L, "resume_too_old");
      lua_setfield(L, -2, "type");
      lua_pushinteger(L, w->after);
      lua_setfield(L, -2, "last_id");
      lua_pushinteger(L, w->oldest);
      lua_setfield(L, -2, "oldest_id");
      ws_queue_table(s, ws);
      ws->streaming = ws->replaying = false;
      subs_clear(ws); /* the client subscribes again */
    } else {
      ws->replay_rows = w->rows;
      ws->replay_row = 0;
      ws->replay_before = w->before;
      w->rows = NULL;
      lws_callback_on_writable(ws->wsi);
    }
  }
  work_free(w);
}

/* One websocket item, on the worker's connection. */
static void work_ws(sb_api_worker_t *aw, work_t *w) {
  if (w->kind == WORK_WS_AUTH) {
    w->ok = sb_api_authenticate(aw, w->token, &w->who, &w->err) == 0;
  } else if (w->kind == WORK_WS_RECHECK) {
    w->ok = sb_api_authenticate_digest(aw, w->sha, &w->who, &w->err) == 0;
  } else if (w->kind == WORK_WS_CHECK) {
    w->ok = sb_api_instance_visible(aw, &w->who, w->check.sub.instance_id, &w->err) == 1;
  } else {
    w->rows = sb_api_events_page(aw, &w->who, w->after, w->before, REPLAY_PAGE, &w->oldest,
                                 &w->err);
  }
}

/* A worker takes the item at the head of the queue and, when that is an instance read
 * (sb_api_batchable), the reads right behind it, up to WORKER_TAKE: they are answered
 * together (sb_api_handle_batch: one pipeline) and go back to the loop with one
 * wake-up. Under load a round trip to PostgreSQL and a context switch serve many
 * reads; anything else is taken alone, so a slow request (a lock wait, a provisioning
 * transaction) holds up nothing but itself; when it is quiet a worker takes the one
 * request there is, at once. */
#define WORKER_TAKE 32

static bool batchable(const work_t *w) { return w->kind == WORK_HTTP && sb_api_batchable(&w->req); }

static void *worker_main(void *arg) {
  sb_httpd_t *s = arg;
  sb_error_t err;
  sb_api_worker_t *aw = NULL;
  while (!atomic_load(&s->stopped)) {
    work_t *take[WORKER_TAKE];
    int n = 0;
    pthread_mutex_lock(&s->queued.mu);
    while (!s->queued.head && !atomic_load(&s->stopped))
      pthread_cond_wait(&s->queued.cv, &s->queued.mu);
    while (s->queued.head && (n == 0 || (n < WORKER_TAKE && batchable(take[0]) &&
                                         batchable(s->queued.head)))) {
      take[n++] = s->queued.head;
      s->queued.head = s->queued.head->next;
    }
    if (!s->queued.head) s->queued.tail = NULL;
    else pthread_cond_signal(&s->queued.cv); /* more than one worker's share: wake another */
    pthread_mutex_unlock(&s->queued.mu);
    if (n == 0) break;
    if (!aw) aw = sb_api_worker_new(&s->shared, &err);
    const sb_api_request_t *reqs[WORKER_TAKE];
    sb_api_response_t *resps[WORKER_TAKE];
    int nhttp = 0;
    for (int i = 0; i < n; i++) {
      work_t *w = take[i];
      if (!aw) {
        /* No database: answer, do not hang the client. */
        if (w->kind == WORK_HTTP)
          answer_here(&w->resp, 503, "{\"error\":{\"code\":\"unavailable\",\"message\":\"the "
                                     "database is not reachable; try again\"}}");
        else
          w->err = err;
      } else if (w->kind == WORK_HTTP) {
        reqs[nhttp] = &w->req;
        resps[nhttp++] = &w->resp;
      } else {
        work_ws(aw, w);
      }
    }
    if (nhttp) sb_api_handle_batch(aw, reqs, resps, nhttp);
    /* Back to the loop in the order taken, with one wake-up. */
    if (queue_push_all(&s->done, take, n)) lws_cancel_service(s->ctx);
  }
  sb_api_worker_free(aw);
  return NULL;
}

/* ---- the listener -------------------------------------------------------------------------- */

/* Reads every event after *last, in order, and hands them to the loop. */
static int fetch_events(sb_httpd_t *s, sb_db_t *db, int64_t *last, sb_error_t *err) {
  for (;;) {
    char after[32];
    snprintf(after, sizeof after, "%lld", (long long)*last);
    const char *p[] = {after};
    /* An index range scan whatever the statistics say (test_stream_reads_use_index).
     * Planned for its value each time (unnamed): a generic plan of `seq > $1` made
     * while the table was small reads all of it on every fetch. And bounded above: with
     * no statistics yet (a new table, before autovacuum's first analyze) `seq > $1`
     * alone is guessed to match a third of the table, and under LIMIT 2000 a sort of a
     * sequential scan looks cheaper up to some 15,000 rows (seen in the fan-out
     * benchmark: 2 ms a read at 6,000 rows, growing); a two-sided range is guessed
     * small. Positions are dense but for aborted commits, so a range of 100,000 holds
     * the next 2,000 events unless that many commits in a row failed (see below). */
    PGresult *res = sb_db_query(db,
                                "SELECT " SB_EVENT_COLUMNS " FROM instance_events e "
                                "WHERE e.seq > $1::bigint AND e.seq <= $1::bigint + 100000 "
                                "ORDER BY e.seq LIMIT 2000",
                                1, p, err);
    if (!res) return -1;
    int n = PQntuples(res);
    if (n == 0) {
      /* Nothing in the range: past a run of unused positions, or (nearly always) at
       * the head. The next position decides, read from the index's end. */
      PQclear(res);
      res = sb_db_query(db, "SELECT min(seq) FROM instance_events WHERE seq > $1::bigint", 1, p,
                        err);
      if (!res) return -1;
      bool beyond = !PQgetisnull(res, 0, 0);
      if (beyond) *last = atoll(PQgetvalue(res, 0, 0)) - 1;
      PQclear(res);
      if (!beyond) return 0;
      continue;
    }
    arrival_t *a = sb_xcalloc(1, sizeof *a);
    a->events = sb_xcalloc((size_t)n, sizeof *a->events);
    a->n = n;
    for (int i = 0; i < n; i++) {
      event_t *e = &a->events[i];
      e->seq = atoll(PQgetvalue(res, i, 0));
      e->len = (size_t)PQgetlength(res, i, 1);
      e->json = sb_xmalloc(e->len + 1);
      memcpy(e->json, PQgetvalue(res, i, 1), e->len + 1);
      snprintf(e->type, sizeof e->type, "%s", PQgetvalue(res, i, 2));
      snprintf(e->instance_id, sizeof e->instance_id, "%s", PQgetvalue(res, i, 3));
      snprintf(e->user_id, sizeof e->user_id, "%s", PQgetvalue(res, i, 4));
    }
    *last = a->events[n - 1].seq;
    pthread_mutex_lock(&s->incoming_mu);
    arrival_t **tail = &s->incoming;
    while (*tail) tail = &(*tail)->next;
    *tail = a;
    pthread_mutex_unlock(&s->incoming_mu);
    lws_cancel_service(s->ctx);
    PQclear(res);
    if (n < 2000) return 0;
  }
}

/* Forgets a changed token (sha, NULL for all) and has the loop recheck the websockets
 * that use it. */
static void token_changed(sb_httpd_t *s, const char *sha) {
  sb_auth_forget(sha);
  token_change_t *t = sb_xcalloc(1, sizeof *t);
  snprintf(t->sha, sizeof t->sha, "%s", sha ? sha : "");
  pthread_mutex_lock(&s->incoming_mu);
  token_change_t **tail = &s->token_changes;
  while (*tail) tail = &(*tail)->next;
  *tail = t;
  pthread_mutex_unlock(&s->incoming_mu);
  lws_cancel_service(s->ctx);
}

/* Retries from 250 ms, doubling to 2 s: after an outage the stream is back within 2 s
 * of the database, and a retry every 2 s costs nothing. */
static sb_db_t *listener_connect(sb_httpd_t *s) {
  sb_error_t err;
  for (int delay = 250, tries = 0; !atomic_load(&s->stopping);
       delay = delay < 2000 ? delay * 2 : 2000, tries++) {
    sb_db_t *db = sb_db_connect(s->shared.db_url, NULL, "solobase events", &err);
    if (db && sb_db_exec_params(db, "LISTEN sb_events", 0, NULL, &err) == 0 &&
        sb_db_exec_params(db, "LISTEN sb_tokens", 0, NULL, &err) == 0)
      return db;
    if (tries % 30 == 0) /* the first time, then about once a minute */
      sb_warn("events", "listening for events: %s; retrying", err.msg);
    sb_db_free(db);
    struct pollfd fd = {s->listener_stop_fd, POLLIN, 0};
    poll(&fd, 1, delay);
  }
  return NULL;
}

/* Handles the notifications libpq holds: token changes now; true when events were
 * announced. */
static bool take_notifications(sb_httpd_t *s, sb_db_t *db) {
  bool events = false;
  PGnotify *nt;
  while ((nt = PQnotifies(db->conn))) {
    if (strcmp(nt->relname, "sb_tokens") == 0) token_changed(s, nt->extra);
    else events = true;
    PQfreemem(nt);
  }
  return events;
}

static void *listener_main(void *arg) {
  sb_httpd_t *s = arg;
  int64_t last = s->last_seq;
  sb_error_t err;
  sb_db_t *db = listener_connect(s);
  /* Anything committed between start-up and LISTEN is read now. */
  if (db && fetch_events(s, db, &last, &err) != 0) sb_warn("events", "%s", err.msg);
  /* Reads are at most one per `events_coalesce_us`: the first notification after a
   * quiet spell is read at once, and under a busy stream the events that commit within
   * one window reach every websocket as one message (one write per client, not one per
   * event), which is what keeps 1,000 subscribers of 1,000 events/s within two cores. */
  const uint64_t window_ns = (uint64_t)sb_config()->events_coalesce_us * 1000u;
  uint64_t last_fetch = 0;
  bool pending = false; /* notified, not yet read */
  while (db && !atomic_load(&s->stopping)) {
    /* First those libpq read along with the last fetch's answer: they are off the
     * socket already, and waiting for the socket would leave their events for the
     * once-a-second read. */
    pending |= take_notifications(s, db);
    /* While a read is due anyway, the socket is left alone until then: under a busy
     * stream that is one wake-up per window instead of one per notification. */
    struct pollfd fds[2] = {{s->listener_stop_fd, POLLIN, 0}, {PQsocket(db->conn), POLLIN, 0}};
    struct timespec wait = {1, 0};
    if (pending) {
      uint64_t now = sb_now_ns(), due = last_fetch + window_ns;
      uint64_t left = due > now ? due - now : 0;
      wait = (struct timespec){(time_t)(left / 1000000000u), (long)(left % 1000000000u)};
    }
    int n = ppoll(fds, pending ? 1 : 2, &wait, NULL);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents) break;
    bool fetch = n == 0 && !pending; /* once a second anyway: a lost notification loses nothing */
    if (pending) fds[1].revents = POLLIN; /* read what came during the wait */
    if (fds[1].revents && !PQconsumeInput(db->conn)) {
      sb_warn("events", "the event connection broke: %s", PQerrorMessage(db->conn));
      sb_db_free(db);
      db = listener_connect(s);
      token_changed(s, NULL); /* revocations may have been missed */
      fetch = true;
      if (!db) break;
    }
    pending |= take_notifications(s, db);
    if (pending && sb_now_ns() >= last_fetch + window_ns) fetch = true;
    if (!fetch) continue;
    pending = false;
    last_fetch = sb_now_ns();
    if (fetch_events(s, db, &last, &err) != 0) {
      sb_warn("events", "reading new events: %s", err.msg);
      if (PQstatus(db->conn) != CONNECTION_OK) {
        sb_db_free(db);
        db = listener_connect(s);
      }
    }
  }
  sb_db_free(db);
  return NULL;
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static const char *mime_of(const char *path) {
  const char *dot = strrchr(path, '.');
  if (!dot) return "application/octet-stream";
  static const char *const map[][2] = {
      {".html", "text/html; charset=utf-8"}, {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},   {".json", "application/json"},
      {".svg", "image/svg+xml"},             {".png", "image/png"},
      {".ico", "image/x-icon"},              {".txt", "text/plain; charset=utf-8"},
  };
  for (size_t i = 0; i < SB_ARRAY_LEN(map); i++)
    if (strcmp(dot, map[i][0]) == 0) return map[i][1];
  return "application/octet-stream";
}

/* Serves a file of the dashboard directory; >0 when lws took over, 0 when not found. */
static int serve_static(struct lws *wsi, const char *path) {
  if (strstr(path, "..") || strchr(path, '\\')) return 0;
  const char *rel = strcmp(path, "/") == 0 ? "/index.html" : path;
  char *file = sb_xasprintf("%s%s", sb_config()->dashboard_dir, rel);
  struct stat st;
  int rc = 0;
  if (stat(file, &st) == 0 && S_ISREG(st.st_mode)) {
    int n = lws_serve_http_file(wsi, file, mime_of(file), NULL, 0);
    rc = n < 0 ? -1 : 1;
  }
  free(file);
  return rc;
}

static const char *method_name(struct lws *wsi) {
  char *uri;
  int len;
  switch (lws_http_get_uri_and_method(wsi, &uri, &len)) {
  case LWSHUMETH_GET: return "GET";
  case LWSHUMETH_POST: return "POST";
  case LWSHUMETH_DELETE: return "DELETE";
  case LWSHUMETH_PUT: return "PUT";
  case LWSHUMETH_PATCH: return "PATCH";
  case LWSHUMETH_OPTIONS: return "OPTIONS";
  case LWSHUMETH_HEAD: return "HEAD";
  default: return "OTHER";
  }
}

/* Reads method, path, query, token and content type of the request on wsi. */
static void read_request(struct lws *wsi, const char *path, sb_api_request_t *req) {
  snprintf(req->method, sizeof req->method, "%s", method_name(wsi));
  snprintf(req->path, sizeof req->path, "%s", path);
  size_t q = 0;
  char frag[512];
  for (int i = 0; lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, i) > 0; i++) {
    int n = snprintf(req->query + q, sizeof req->query - q, "%s%s", q ? "&" : "", frag);
    if (n < 0 || (size_t)n >= sizeof req->query - q) break;
    q += (size_t)n;
  }
  char auth[256] = "";
  if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 7 &&
      strncasecmp(auth, "Bearer ", 7) == 0)
    snprintf(req->token, sizeof req->token, "%s", auth + 7);
  explicit_bzero(auth, sizeof auth);
  lws_hdr_copy(wsi, req->content_type, sizeof req->content_type, WSI_TOKEN_HTTP_CONTENT_TYPE);
}

static void submit_http(sb_httpd_t *s, http_session_t *hs) {
  work_t *w = sb_xcalloc(1, sizeof *w);
  w->kind = WORK_HTTP;
  w->session = hs;
  w->req = hs->req;
  w->started_ns = hs->started_ns;
  memset(&hs->req, 0, sizeof hs->req); /* the body moved to the work */
  hs->submitted = true;
  if (!hs->counted) s->http_inflight++; /* until the answer is written or the connection closes */
  hs->counted = true;
  if (hs->chunked) {
    /* libwebsockets 4.1 does not read chunked request bodies; what follows the headers
     * cannot be parsed, so the connection closes after the answer. */
    answer_here(&w->resp, 411, "{\"error\":{\"code\":\"length_required\",\"message\":\"a "
                               "request body needs Content-Length (chunked bodies are not read)\"}}");
    deliver(s, w);
    return;
  }
  if (atomic_load(&s->stopping)) {
    answer_here(&w->resp, 503, "{\"error\":{\"code\":\"shutting_down\",\"message\":\"this "
                               "server is shutting down; try again\"}}");
    deliver(s, w);
    return;
  }
  hand_to_workers(s, w);
}

/* Writes the answer: headers and body in one buffer and one write (one segment for the
 * client to wake up to, not two). */
static int http_write_answer(sb_httpd_t *s, struct lws *wsi, http_session_t *hs) {
  work_t *w = hs->answer;
  sb_api_response_t *r = &w->resp;
  enum { HEAD_MAX = 1024 };
  unsigned char *start = ensure(&s->batch, HEAD_MAX + r->len), *p = start,
                *end = start + HEAD_MAX - 1;
  int rc = -1;
  if (lws_add_http_common_headers(wsi, (unsigned int)r->status,
                                  r->content_type ? r->content_type : "application/json",
                                  (lws_filepos_t)r->len, &p, end) ||
      (r->location[0] && lws_add_http_header_by_name(wsi, (const unsigned char *)"location:",
                                                     (const unsigned char *)r->location,
                                                     (int)strlen(r->location), &p, end)) ||
      /* RFC 9110 11.6.1: a 401 names the scheme that would do. */
      (r->status == 401 &&
       lws_add_http_header_by_name(wsi, (const unsigned char *)"www-authenticate:",
                                   (const unsigned char *)"Bearer", 6, &p, end)) ||
      (r->allow &&
       lws_add_http_header_by_name(wsi, (const unsigned char *)"allow:",
                                   (const unsigned char *)r->allow, (int)strlen(r->allow), &p,
                                   end)) ||
      (hs->chunked &&
       lws_add_http_header_by_name(wsi, (const unsigned char *)"connection:",
                                   (const unsigned char *)"close", 5, &p, end)) ||
      lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                  (const unsigned char *)"no-store", 8, &p, end) ||
      lws_finalize_http_header(wsi, &p, end))
    goto done;
  size_t body = hs->head ? 0 : r->len; /* HEAD: the headers GET would have, no body */
  if (body) memcpy(p, r->body, body);
  size_t total = (size_t)(p - start) + body;
  if (lws_write(wsi, start, total, LWS_WRITE_HTTP_FINAL) < (int)total) goto done;
  sb_metrics_http(r->route, w->req.method, r->status,
                  (double)(sb_now_ns() - w->started_ns) / 1e9);
  rc = 0;
done:
  s->http_inflight--; /* written, or the connection is dropped: nothing left to wait for */
  work_free(w);
  bool close = hs->chunked;
  free(hs);
  if (rc != 0 || close) return -1;
  /* The per-connection data stays lws's own (pss->http is already NULL): handing it a
   * NULL user pointer here made lws allocate a fresh one on the next transaction and
   * never free it, 16 bytes per request. */
  return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ---- the protocol callback ---------------------------------------------------------------- */

/* Per-connection data libwebsockets allocates: a pointer to our own session. */
typedef struct pss {
  http_session_t *http;
  ws_session_t *ws;
} pss_t;

static void ws_session_release(sb_httpd_t *s, ws_session_t *ws) {
  if (ws->inflight > 0) return; /* freed when the last work item comes back */
  for (int i = 0; i < ws->nout; i++) free(ws->outbox[i]);
  PQclear(ws->replay_rows);
  subs_clear(ws);
  free(ws->subs);
  free(ws->rx);
  free(ws);
  (void)s;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  sb_httpd_t *s = lws_context_user(lws_get_context(wsi));
  pss_t *pss = user;
  switch (reason) {
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED: {
    /* Woken by a worker or the listener: take their results. */
    for (work_t *w = queue_take_all(&s->done), *next; w; w = next) {
      next = w->next;
      deliver(s, w);
    }
    pthread_mutex_lock(&s->incoming_mu);
    arrival_t *a = s->incoming;
    s->incoming = NULL;
    token_change_t *tc = s->token_changes;
    s->token_changes = NULL;
    pthread_mutex_unlock(&s->incoming_mu);
    /* Token changes first: events committed after a revocation are not sent on it. */
    for (token_change_t *next; tc; tc = next) {
      next = tc->next;
      for (ws_session_t *ws = s->sessions; ws; ws = ws->next)
        if (ws->authed && !ws->closing && (!tc->sha[0] || strcmp(tc->sha, ws->who.token_sha) == 0))
          request_recheck(s, ws);
      free(tc);
    }
    bool any = false;
    for (arrival_t *next; a; a = next) {
      next = a->next;
      for (int i = 0; i < a->n; i++)
        if (a->events[i].seq > s->last_seq) ring_append(s, &a->events[i]), any = true;
        else free(a->events[i].json);
      free(a->events);
      free(a);
    }
    if (any) push_all(s);
    if (atomic_load(&s->stopping) && !s->closing_all) {
      s->closing_all = true;
      /* New requests are answered 503 and new websockets refused from now on (see
       * LWS_CALLBACK_HTTP and FILTER_PROTOCOL_CONNECTION). lws_context_deprecate() would
       * close the listening socket, but crashes in libwebsockets 4.1 when called here. */
      for (ws_session_t *ws = s->sessions; ws; ws = ws->next) ws_close(ws, 1001, "server shutting down");
    }
    break;
  }

  case LWS_CALLBACK_HTTP: {
    /* Never two requests on one connection's session (see BODY_COMPLETION). */
    if (pss->http) return -1;
    const char *path = in ? (const char *)in : "/";
    http_session_t *hs = sb_xcalloc(1, sizeof *hs);
    hs->wsi = wsi;
    hs->started_ns = sb_now_ns();
    pss->http = hs;
    read_request(wsi, path, &hs->req);
    bool api = strncmp(path, "/v1/", 4) == 0 || strcmp(path, "/healthz") == 0 ||
               strcmp(path, "/metrics") == 0;
    if (api && strcmp(hs->req.method, "HEAD") == 0) { /* RFC 9110 9.3.2 */
      hs->head = true;
      snprintf(hs->req.method, sizeof hs->req.method, "GET");
    }
    /* Shutting down, everything is answered 503 by submit_http(). */
    if (!api && strcmp(hs->req.method, "GET") == 0 && !atomic_load(&s->stopping)) {
      int r = serve_static(wsi, path);
      if (r != 0) {
        pss->http = NULL;
        sb_metrics_http(SB_ROUTE_STATIC, "GET", r > 0 ? 200 : 500,
                        (double)(sb_now_ns() - hs->started_ns) / 1e9);
        free(hs);
        return r < 0 ? -1 : 0;
      }
    }
    bool length = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    hs->chunked = !length && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0;
    if (hs->chunked) {
      /* Answered here and now: lws would next take the chunks for a new request. */
      submit_http(s, hs);
      pss->http = NULL;
      return http_write_answer(s, wsi, hs);
    }
    if (!length) {
      submit_http(s, hs);
    } else {
      /* Counted while its body comes: a shutdown waits for it and answers it (503). */
      s->http_inflight++;
      hs->counted = true;
    }
    return 0; /* the body, if any, comes in LWS_CALLBACK_HTTP_BODY */
  }

  case LWS_CALLBACK_HTTP_BODY: {
    http_session_t *hs = pss->http;
    if (!hs) return -1;
    sb_api_request_t *req = &hs->req;
    if (req->body_len + len > SB_API_MAX_BODY) {
      req->body_too_large = true; /* keep reading, answer 413 at the end */
      return 0;
    }
    req->body = sb_xrealloc(req->body, req->body_len + len + 1);
    memcpy(req->body + req->body_len, in, len);
    req->body_len += len;
    req->body[req->body_len] = '\0';
    return 0;
  }

  case LWS_CALLBACK_HTTP_BODY_COMPLETION:
    if (!pss->http) return -1;
    /* Again for the same request: the client sent more (a pipelined request) before
     * this one was answered. libwebsockets 4.1 stays in the body state until the answer
     * completes the transaction and hands the new bytes here on every service pass (a
     * busy loop; submitting again crashed the engine). The connection is closed: RFC
     * 9112 9.3.2 has a client that pipelines send again what was not answered. The
     * request in flight is still carried out, its answer dropped (CLOSED_HTTP).
     * Pipelining behind a request without a body works: lws holds it until then. */
    if (pss->http->submitted) return -1;
    submit_http(s, pss->http);
    return 0;

  case LWS_CALLBACK_HTTP_WRITEABLE:
    if (!pss->http || !pss->http->answer) return 0;
    {
      http_session_t *hs = pss->http;
      pss->http = NULL;
      return http_write_answer(s, wsi, hs);
    }

  case LWS_CALLBACK_HTTP_FILE_COMPLETION:
    return lws_http_transaction_completed(wsi) ? -1 : 0;

  case LWS_CALLBACK_CLOSED_HTTP:
    if (pss && pss->http) {
      http_session_t *hs = pss->http;
      pss->http = NULL;
      if (hs->answer) {
        s->http_inflight--;
        work_free(hs->answer);
        free(hs);
      } else if (hs->submitted) {
        hs->dead = true; /* a worker has it; deliver() frees it */
      } else {
        if (hs->counted) s->http_inflight--; /* its body never came whole */
        free(hs->req.body);
        free(hs);
      }
    }
    break;

  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
    char uri[128] = "";
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/v1/events") != 0)
      return 1; /* websockets are at /v1/events only */
    if (atomic_load(&s->stopping)) return 1;
    break;
  }

  case LWS_CALLBACK_ESTABLISHED: {
    ws_session_t *ws = sb_xcalloc(1, sizeof *ws);
    ws->wsi = wsi;
    ws->auth_deadline_ns = sb_now_ns() + (uint64_t)AUTH_TIMEOUT_S * 1000000000u;
    pss->ws = ws;
    ws->next = s->sessions;
    if (s->sessions) s->sessions->prev = ws;
    s->sessions = ws;
    s->nsessions++;
    sb_metrics_ws_clients(1);
    /* A token in the header or the query authenticates at once. */
    char auth[256] = "", q[256] = "";
    if (lws_hdr_copy(wsi, auth, sizeof auth, WSI_TOKEN_HTTP_AUTHORIZATION) > 7 &&
        strncasecmp(auth, "Bearer ", 7) == 0)
      request_auth(s, ws, auth + 7);
    else {
      /* lws 4.1 copies the whole argument, name and all, and returns a pointer past
       * the name: that pointer is the token. */
      const char *tok = lws_get_urlarg_by_name(wsi, "access_token=", q, sizeof q);
      if (tok) request_auth(s, ws, tok);
    }
    explicit_bzero(auth, sizeof auth);
    explicit_bzero(q, sizeof q);
    lws_set_timer_usecs(wsi, AUTH_TIMEOUT_S * LWS_USEC_PER_SEC);
    break;
  }

  case LWS_CALLBACK_TIMER: {
    ws_session_t *ws = pss ? pss->ws : NULL;
    if (!ws) break;
    if (!ws->authed && !ws->auth_pending) ws_close(ws, 4401, "not authenticated");
    else if (ws->authed && ws->who.expires_at && time(NULL) >= ws->who.expires_at)
      ws_close(ws, 4001, "token expired");
    else if (ws->authed)
      arm_expiry(ws); /* woken early */
    break;
  }

  case LWS_CALLBACK_RECEIVE: {
    ws_session_t *ws = pss->ws;
    if (!ws) return -1;
    if (lws_is_first_fragment(wsi)) {
      ws->rxlen = 0;
      ws->rx_too_big = false;
    }
    if (ws->rxlen + len > SB_API_MAX_BODY) ws->rx_too_big = true;
    if (!ws->rx_too_big) {
      if (ws->rxlen + len + 1 > ws->rxcap) {
        /* Most messages are small: grow as needed, up to the limit. */
        ws->rxcap = ws->rxlen + len + 1 < 512 ? 512 : 2 * (ws->rxlen + len + 1);
        ws->rx = sb_xrealloc(ws->rx, ws->rxcap);
      }
      memcpy(ws->rx + ws->rxlen, in, len);
      ws->rxlen += len;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) break;
    if (ws->rx_too_big) ws_error(s, ws, "bad_message", NULL, "messages are at most %d bytes", SB_API_MAX_BODY);
    else handle_message(s, ws, ws->rx, ws->rxlen);
    break;
  }

  case LWS_CALLBACK_SERVER_WRITEABLE:
    if (!pss->ws) return -1;
    return ws_writable(s, pss->ws);

  case LWS_CALLBACK_CLOSED: {
    ws_session_t *ws = pss->ws;
    if (!ws) break;
    pss->ws = NULL;
    if (ws->prev) ws->prev->next = ws->next;
    else s->sessions = ws->next;
    if (ws->next) ws->next->prev = ws->prev;
    s->nsessions--;
    sb_metrics_ws_clients(-1);
    ws->dead = true;
    ws_session_release(s, ws);
    break;
  }

  default:
    break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"http", callback, sizeof(pss_t), 4096, 0, NULL, 0},
    {"solobase.events.v1", callback, sizeof(pss_t), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* Pings idle websockets every 30 s, hangs up after 60 s without an answer. */
static const lws_retry_bo_t keepalive = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 60,
};

static void *loop_main(void *arg) {
  sb_httpd_t *s = arg;
  uint64_t stop_started = 0;
  while (!atomic_load(&s->stopped)) {
    if (lws_service(s->ctx, 0) < 0) break;
    if (atomic_load(&s->stopping)) {
      if (!stop_started) stop_started = sb_now_ns();
      /* Done when the requests in flight are answered and websockets closed, or after
       * 10 seconds whatever is left. */
      if ((s->http_inflight == 0 && s->nsessions == 0) ||
          sb_now_ns() - stop_started > 10000000000ull)
        break;
    }
  }
  if (s->pass_scheduled) lws_sul_cancel(&s->pass_sul);
  lws_sul_cancel(&s->trim_sul);
  return NULL;
}

static void engine_stats(void *ud, sb_metrics_extra_t *x) {
  sb_engine_stats_t st;
  sb_engine_stats(ud, &st);
  x->jobs_done = st.jobs_done;
  x->jobs_retried = st.jobs_retried;
  x->jobs_failed = st.jobs_dead;
  x->leader = st.leader;
  x->policy_reloads = st.policy_reloads;
  x->engine_id = st.engine_id;
}

static void lws_log_to_ours(int level, const char *line) {
  size_t n = strlen(line);
  while (n && line[n - 1] == '\n') n--;
  if (level & LLL_ERR) sb_error("lws", "%.*s", (int)n, line);
  else if (level & LLL_WARN) sb_warn("lws", "%.*s", (int)n, line);
}

/* Every websocket client is a descriptor: raise the soft limit to the hard one (at most
 * 65,536), as servers do, and say so when it stays low. */
static void raise_fd_limit(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > 65536 ? 65536 : rl.rlim_max;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  if (rl.rlim_cur < 4096)
    sb_warn("server", "only %lu file descriptors (ulimit -n): that many clients at most",
            (unsigned long)rl.rlim_cur);
}

sb_httpd_t *sb_httpd_start(sb_engine_t *engine, sb_error_t *err) {
  sb_httpd_t *s = sb_xcalloc(1, sizeof *s);
  s->engine = engine;
  s->shared.db_url = sb_engine_db_url(engine);
  s->shared.policies = sb_engine_policies(engine);
  s->shared.keys = sb_engine_keys(engine);
  s->shared.engine_stats = engine_stats;
  s->shared.engine_ud = engine;
  queue_init(&s->queued);
  queue_init(&s->done);
  pthread_mutex_init(&s->incoming_mu, NULL);
  s->listener_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  s->L = luaL_newstate();
  luaL_openlibs(s->L);
  sb_lua_json_open(s->L);
  ensure(&s->batch, BATCH_BYTES + 1024);

  /* Where the stream starts: the newest event now. */
  sb_db_t *db = sb_db_connect(s->shared.db_url, NULL, "solobase server", err);
  if (!db) goto fail;
  PGresult *res = sb_db_query(db, "SELECT coalesce(max(seq), 0) FROM instance_events", 0, NULL, err);
  sb_db_free(db);
  if (!res) goto fail;
  s->last_seq = s->ring_floor = atoll(PQgetvalue(res, 0, 0));
  PQclear(res);

  char host[256];
  snprintf(host, sizeof host, "%s", sb_config()->listen);
  char *colon = strrchr(host, ':');
  if (!colon) {
    sb_error_set(err, "listen must be HOST:PORT, got '%s'", sb_config()->listen);
    goto fail;
  }
  *colon = '\0';
  raise_fd_limit();
  lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_to_ours);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = atoi(colon + 1);
  info.iface = host[0] ? host : NULL;
  info.protocols = protocols;
  info.user = s;
  info.retry_and_idle_policy = &keepalive;
  info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
  /* An IPv4 address gets an IPv4 socket: libwebsockets would otherwise listen on an
   * IPv6 one and take IPv4 clients as v4-mapped addresses, which costs 6-9% more per
   * send on loopback (tests/bench/fanout_floor, both ways on this machine). */
  struct in_addr v4;
  if (host[0] && inet_pton(AF_INET, host, &v4) == 1) info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  info.keepalive_timeout = 60;
  info.timeout_secs = 30;
  /* Not fd_limit_per_thread: with it, libwebsockets 4.1 finds a connection by its fd
   * with a linear scan (8 % of the loop's time with 1,000 clients); without it, with an
   * array indexed by fd, sized by RLIMIT_NOFILE (raised in sb_httpd_start). */
  s->ctx = lws_create_context(&info);
  if (!s->ctx) {
    sb_error_set(err, "cannot listen on %s (in use, or not an address of this machine)", sb_config()->listen);
    goto fail;
  }
  struct lws_vhost *vh = lws_get_vhost_by_name(s->ctx, "default");
  s->port = vh ? lws_get_vhost_listen_port(vh) : info.port;
  lws_sul_schedule(s->ctx, 0, &s->trim_sul, trim_memory, TRIM_EVERY_US); /* before the loop runs */
  s->nworkers = (int)sb_config()->api_workers;
  s->workers = sb_xcalloc((size_t)s->nworkers, sizeof *s->workers);
  for (int i = 0; i < s->nworkers; i++) pthread_create(&s->workers[i], NULL, worker_main, s);
  pthread_create(&s->listener_thread, NULL, listener_main, s);
  pthread_create(&s->loop_thread, NULL, loop_main, s);
  sb_info("server", "listening on http://%s:%d (%d API workers; events at /v1/events)",
          host[0] ? host : "*", s->port, s->nworkers);
  return s;
fail:
  if (s->L) lua_close(s->L);
  free(s->batch.p);
  close(s->listener_stop_fd);
  free(s);
  return NULL;
}

int sb_httpd_port(const sb_httpd_t *s) { return s->port; }

void sb_httpd_stop(sb_httpd_t *s) {
  if (!s) return;
  atomic_store(&s->stopping, true);
  lws_cancel_service(s->ctx);
  pthread_join(s->loop_thread, NULL);
  atomic_store(&s->stopped, true);
  uint64_t one = 1;
  ssize_t r = write(s->listener_stop_fd, &one, sizeof one);
  (void)r;
  pthread_mutex_lock(&s->queued.mu);
  pthread_cond_broadcast(&s->queued.cv);
  pthread_mutex_unlock(&s->queued.mu);
  for (int i = 0; i < s->nworkers; i++) pthread_join(s->workers[i], NULL);
  pthread_join(s->listener_thread, NULL);
  lws_context_destroy(s->ctx);
  for (work_t *w = queue_take_all(&s->queued), *n; w; w = n) n = w->next, work_free(w);
  for (work_t *w = queue_take_all(&s->done), *n; w; w = n) n = w->next, work_free(w);
  for (token_change_t *t = s->token_changes, *n; t; t = n) n = t->next, free(t);
  for (arrival_t *a = s->incoming, *n; a; a = n) {
    n = a->next;
    for (int i = 0; i < a->n; i++) free(a->events[i].json);
    free(a->events);
    free(a);
  }
  for (uint64_t p = oldest_pos(s); p < s->head; p++) free(at(s, p)->json);
  lua_close(s->L);
  free(s->batch.p);
  free(s->all_batch.p);
  free(s->workers);
  close(s->listener_stop_fd);
  free(s);
  sb_info("server", "stopped");
}

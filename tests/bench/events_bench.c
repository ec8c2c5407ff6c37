/*
 * events_bench.c: load client of the event stream benchmark (issue: event stream and
 * HTTP API; docs/benchmarks.md, run by tests/bench/run-events-bench).
 *
 * One process plays both ends of the stream:
 *   - producers: threads that insert events into instance_events at a target rate,
 *     each INSERT its own transaction (autocommit), on their own connections (core/db.h),
 *     and note CLOCK_REALTIME right after the commit returned;
 *   - subscribers: N websocket clients (default 1000) on one libwebsockets context and
 *     one service thread. Against `solobase serve` each authenticates with
 *     {"type":"auth"} and subscribes to everything (docs/events.md) and reads `events`
 *     messages (arrays); with --plain (the Node baseline) each message is one event.
 *
 * Every received event is one delivery; its latency is the receipt time (CLOCK_REALTIME
 * when its bytes were handed over) minus its commit time. Producers choose each event's
 * uuid (this run's nonce and the event's number) rather than take the table's default
 * with RETURNING id, so the commit-time map is an array indexed by the number read back
 * from `event_id`: no hashing, no locks, nothing allocated per message. An event that
 * arrives before its producer noted the commit waits in a list and is timed at the end.
 * Each client keeps a bitmap of the events it got and the last `id`: missing, duplicate
 * and out-of-order events are counted per client (against solobase every client must
 * get every event exactly once, in id order).
 *
 * Phases: connect all clients (at most 100 handshakes in flight) and wait until each is
 * subscribed; settle 1 s and sample the server's RSS (--server-pid); produce for
 * --seconds; drain until every client has every event (or nothing arrives for 3 s);
 * report. The last line is `RESULT key=value ...` for scripts. The service thread's CPU
 * and the machine's are reported so a run can show it was not limited by this client.
 *
 *   build/events_bench --url ws://127.0.0.1:8080/v1/events --token sbt_... [--clients 1000]
 *       [--rate 1000] [--seconds 10] [--producers 4] [--server-pid PID] [--plain]
 * DATABASE_URL names the management database the producers write to.
 */
#include <getopt.h>
#include <libwebsockets.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "util.h"

#define MAX_PRODUCERS 64
#define HANDSHAKES_IN_FLIGHT 100
#define TICK_US 10000
#define SETTLE_S 1.0
#define DRAIN_IDLE_S 3.0
#define PENDING_MAX (1u << 20)
#define SHOW_MAX 5

/* ---- settings ---- */

static struct {
  const char *url, *token, *database_url;
  char host[256], path[256];
  int port, clients, producers, seconds, drain_max_s;
  double rate; /* events/s; 0: as fast as the producers go */
  long max_events;
  int server_pid;
  bool plain;
} opt = {.clients = 1000, .producers = 4, .seconds = 10, .drain_max_s = 60, .rate = 1000};

/* ---- latency histogram: 10 us buckets to 100 ms, 1 ms buckets to 100 s ---- */

#define FINE_BUCKETS 10000
#define COARSE_BUCKETS 99900
typedef struct histogram {
  uint64_t count[FINE_BUCKETS + COARSE_BUCKETS + 1];
  uint64_t n;
  int64_t max_ns;
} histogram_t;

static void hist_add(histogram_t *h, int64_t ns) {
  if (ns < 0) ns = 0;
  int64_t us = ns / 1000;
  size_t b = us < 100000 ? (size_t)(us / 10)
                         : (size_t)FINE_BUCKETS + (size_t)((us - 100000) / 1000);
  if (b > FINE_BUCKETS + COARSE_BUCKETS) b = FINE_BUCKETS + COARSE_BUCKETS;
  h->count[b]++;
  h->n++;
  if (ns > h->max_ns) h->max_ns = ns;
}

/* Latency by second of commit time (from the first commit): where in a run it grew. */
#define TIMELINE_S 600
static struct {
  int64_t max_ns[TIMELINE_S];
  uint64_t n[TIMELINE_S], over10[TIMELINE_S];
} timeline;

static void timeline_add(int64_t commit_ns, int64_t first_ns, int64_t lat_ns) {
  int64_t sec = (commit_ns - first_ns) / 1000000000;
  if (sec < 0 || sec >= TIMELINE_S) return;
  timeline.n[sec]++;
  timeline.over10[sec] += lat_ns > 10000000;
  if (lat_ns > timeline.max_ns[sec]) timeline.max_ns[sec] = lat_ns;
}

/* Upper edge of the bucket holding the p-th fraction of samples, in ms. */
static double hist_pct_ms(const histogram_t *h, double p) {
  if (h->n == 0) return 0;
  uint64_t want = (uint64_t)(p * (double)h->n + 0.999999), seen = 0;
  if (want < 1) want = 1;
  for (size_t b = 0; b <= FINE_BUCKETS + COARSE_BUCKETS; b++) {
    seen += h->count[b];
    if (seen >= want)
      return b < FINE_BUCKETS ? (double)(b + 1) * 0.01 : 100.0 + (double)(b - FINE_BUCKETS + 1);
  }
  return (double)h->max_ns / 1e6;
}

/* ---- shared state: producers write, the service thread reads ---- */

static char nonce[9];                /* first uuid group of this run's events */
static _Atomic int64_t *commit_ns;   /* per event number: realtime after commit, 0 = not yet */
static _Atomic long next_event;      /* next event number a producer takes */
static _Atomic long produced, produce_failed;
static _Atomic bool go, stop_producing;
static _Atomic int producers_done;
static _Atomic uint64_t start_mono_ns;

/* ---- per connection ---- */

enum { S_IDLE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_READY, S_CLOSED, S_FAILED };
/* Frames a client owes the server, written one per WRITEABLE callback. */
enum { OUT_UPGRADE = 1, OUT_AUTH = 2, OUT_SUBSCRIBE = 4, OUT_PONG = 8 };

typedef struct session {
  struct lws *wsi;
  int index;
  uint8_t state, out;
  bool subscribed, overflowed;
  int close_code;
  int64_t last_id;
  long received, duplicates, out_of_order;
  uint64_t *seen;           /* bitmap over event numbers */
  unsigned char mask[4];    /* masking key of the frames this client sends */
  char accept[32];          /* the Sec-WebSocket-Accept the server must answer */
  char key[32];             /* our Sec-WebSocket-Key */
  unsigned char pong[125];  /* payload of the last ping, echoed */
  uint8_t pong_len;
  unsigned char *acc;       /* bytes of an incomplete frame or HTTP response */
  size_t acc_len, acc_cap;
  unsigned char *frag;      /* a message arriving in several frames */
  size_t frag_len, frag_cap;
  bool in_fragmented;
} session_t;

typedef struct pending {
  uint32_t event;
  int64_t received_ns;
} pending_t;

/* Everything the service thread owns. */
static struct {
  struct lws_context *ctx;
  lws_sorted_usec_list_t tick;
  session_t *sessions;
  int started, open, ready, failed, closed_early;
  enum { P_CONNECT, P_SETTLE, P_RUN, P_DRAIN, P_DONE } phase;
  uint64_t phase_t0, connect_t0, last_delivery_mono;
  bool done, libev;
  histogram_t hist;
  pending_t *pending; /* events received before their producer noted the commit */
  size_t npending;
  long deliveries, messages, foreign, early, unresolved, errors, overflows, bad;
  long max_event; /* the event of the slowest delivery, and when it was produced */
  int64_t max_event_commit;
  double connect_s;
  /* samples */
  long rss_idle_clients_kb, rss_end_kb;
  double server_cpu0, server_cpu1, machine_busy0, machine_busy1, machine_all0, machine_all1;
  double self_cpu0, self_cpu1;
  uint64_t run_t0, run_t1;
} B;

static void fail(const char *what, const char *why) {
  fprintf(stderr, "events_bench: %s: %s\n", what, why);
  exit(1);
}

static int64_t realtime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- /proc samples ---- */

static long proc_rss_kb(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

/* CPU seconds (user + system) a process has used. */
static double proc_cpu_s(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')'); /* the command may hold spaces */
  unsigned long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void machine_cpu(double *busy, double *all) {
  unsigned long long v[8] = {0};
  FILE *f = fopen("/proc/stat", "r");
  if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                  &v[4], &v[5], &v[6], &v[7]) == 8) {
    double hz = (double)sysconf(_SC_CLK_TCK);
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / hz;
    *all = *busy + (double)(v[3] + v[4]) / hz;
  }
  if (f) fclose(f);
}

static double thread_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- producers ---- */

static const char INSERT_EVENT[] =
    "INSERT INTO instance_events (id, event_type, description, actor) "
    "VALUES ($1, 'bench.tick', 'events_bench', 'bench')";

static void *producer(void *arg) {
  (void)arg;
  sb_error_t err;
  sb_db_t *db = sb_db_connect(opt.database_url, NULL, "events_bench", &err);
  if (!db) fail("producer connection", err.msg);
  while (!atomic_load(&go)) usleep(200);
  uint64_t t0 = atomic_load(&start_mono_ns);
  while (!atomic_load(&stop_producing)) {
    long i = atomic_fetch_add(&next_event, 1);
    if (i >= opt.max_events) break;
    if (opt.rate > 0) {
      uint64_t due = t0 + (uint64_t)((double)i * 1e9 / opt.rate);
      struct timespec ts = {(time_t)(due / 1000000000u), (long)(due % 1000000000u)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
      if (atomic_load(&stop_producing)) break;
    }
    char id[37];
    snprintf(id, sizeof id, "%s-0000-4000-8000-%012lx", nonce, (unsigned long)i);
    const char *params[] = {id};
    PGresult *res = sb_db_query_prepared(db, INSERT_EVENT, 1, params, &err);
    int64_t now = realtime_ns();
    if (!res) {
      if (atomic_fetch_add(&produce_failed, 1) < SHOW_MAX) fprintf(stderr, "insert: %s\n", err.msg);
      continue;
    }
    PQclear(res);
    atomic_store_explicit(&commit_ns[i], now, memory_order_release);
    atomic_fetch_add(&produced, 1);
  }
  sb_db_free(db);
  atomic_fetch_add(&producers_done, 1);
  return NULL;
}

/* ---- JSON scanning: just enough to walk messages without building anything ---- */

typedef struct scan {
  const char *p, *end;
} scan_t;

static void skip_ws(scan_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

/* At a '"': moves past the closing quote; the raw contents are [*str, *str + *len). */
static bool scan_string(scan_t *s, const char **str, size_t *len) {
  if (s->p >= s->end || *s->p != '"') return false;
  const char *start = ++s->p;
  while (s->p < s->end) {
    char c = *s->p++;
    if (c == '\\') s->p++;
    else if (c == '"') {
      *str = start;
      *len = (size_t)(s->p - 1 - start);
      return true;
    }
  }
  return false;
}

static bool skip_value(scan_t *s) {
  skip_ws(s);
  if (s->p >= s->end) return false;
  const char *str;
  size_t len;
  if (*s->p == '"') return scan_string(s, &str, &len);
  if (*s->p == '{' || *s->p == '[') {
    int depth = 0;
    while (s->p < s->end) {
      char c = *s->p;
      if (c == '"') {
        if (!scan_string(s, &str, &len)) return false;
        continue;
      }
      s->p++;
      if (c == '{' || c == '[') depth++;
      else if ((c == '}' || c == ']') && --depth == 0) return true;
    }
    return false;
  }
  while (s->p < s->end && *s->p != ',' && *s->p != '}' && *s->p != ']' && *s->p != ' ') s->p++;
  return true;
}

/* Iterates an object's members: call with s at '{' (first) or after a value. Returns
 * true with the key when there is one more member (s then at its value). */
static bool next_member(scan_t *s, bool first, const char **key, size_t *klen, bool *ok) {
  skip_ws(s);
  if (first) {
    if (s->p >= s->end || *s->p != '{') return *ok = false;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') return s->p++, false;
  } else {
    if (s->p < s->end && *s->p == '}') return s->p++, false;
    if (s->p >= s->end || *s->p != ',') return *ok = false;
    s->p++;
    skip_ws(s);
  }
  if (!scan_string(s, key, klen)) return *ok = false;
  skip_ws(s);
  if (s->p >= s->end || *s->p != ':') return *ok = false;
  s->p++;
  skip_ws(s);
  return true;
}

#define KEY_IS(k, n, lit) ((n) == sizeof(lit) - 1 && memcmp((k), lit, sizeof(lit) - 1) == 0)

/* This run's event number from an event_id, or -1 for an event someone else wrote. */
static long event_number(const char *id, size_t len) {
  if (len != 36 || memcmp(id, nonce, 8) != 0 || memcmp(id + 8, "-0000-4000-8000-", 16) != 0)
    return -1;
  long n = 0;
  for (int i = 24; i < 36; i++) {
    char c = id[i];
    n = n * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return n < opt.max_events ? n : -1;
}

static void deliver(session_t *s, int64_t id, long n, int64_t now) {
  B.deliveries++;
  if (n < 0) {
    B.foreign++;
    return;
  }
  uint64_t bit = 1ull << (n & 63);
  if (s->seen[n >> 6] & bit) {
    s->duplicates++;
    return;
  }
  s->seen[n >> 6] |= bit;
  s->received++;
  if (id <= s->last_id) s->out_of_order++;
  else s->last_id = id;
  int64_t c = atomic_load_explicit(&commit_ns[n], memory_order_acquire);
  if (c == 0) {
    if (B.npending < PENDING_MAX) B.pending[B.npending++] = (pending_t){(uint32_t)n, now};
    else B.unresolved++;
  } else {
    if (now - c > B.hist.max_ns) B.max_event = n, B.max_event_commit = c;
    hist_add(&B.hist, now - c);
    timeline_add(c, atomic_load_explicit(&commit_ns[0], memory_order_relaxed), now - c);
  }
}

/* Inside an object (depth 1) after a member's value or key: moves past its closing
 * brace, looking only at quotes and brackets (memchr over string contents). The
 * member-by-member walk took a third of this client's thread. */
static bool skip_rest(scan_t *s) {
  static const bool special[256] = {['"'] = 1, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1};
  int depth = 1;
  const char *p = s->p, *end = s->end;
  while (p < end) {
    unsigned char c = (unsigned char)*p++;
    if (!special[c]) continue;
    if (c == '"') {
      for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q) return false;
        const char *b = q;
        while (b > p && b[-1] == '\\') b--;
        p = q + 1;
        if (((q - b) & 1) == 0) break; /* an even run of backslashes: the closing quote */
      }
    } else if (c == '{' || c == '[') {
      depth++;
    } else if (--depth == 0) {
      s->p = p;
      return true;
    }
  }
  return false;
}

/* One event object: its id and event number ("id" and "event_id", the first two
 * members as the server writes them; the rest is skipped without being walked). */
static bool scan_event(scan_t *s, session_t *ss, int64_t now) {
  const char *key, *str;
  size_t klen, len;
  bool ok = true, first = true;
  int64_t id = -1;
  long n = -1;
  bool have_n = false;
  while (next_member(s, first, &key, &klen, &ok)) {
    first = false;
    if (KEY_IS(key, klen, "id")) {
      id = 0;
      while (s->p < s->end && *s->p >= '0' && *s->p <= '9') id = id * 10 + (*s->p++ - '0');
    } else if (KEY_IS(key, klen, "event_id")) {
      if (!scan_string(s, &str, &len)) return false;
      n = event_number(str, len);
      have_n = true;
    } else if (!skip_value(s)) {
      return false;
    }
    if (id >= 0 && have_n) {
      if (!skip_rest(s)) return false;
      break;
    }
  }
  if (!ok || id < 0) return false;
  deliver(ss, id, n, now);
  return true;
}

/* ---- the websocket client ----
 *
 * The connections are libwebsockets RAW client connections, and the little of RFC 6455
 * a client needs (the upgrade, unmasked frames in, masked frames out, ping and close)
 * is done here. libwebsockets 4.1 parses a client's incoming frames a byte at a time:
 * measured here at 0.9 us of its 1.3 us per 330-byte event, which made the client
 * itself the bottleneck above ~700,000 deliveries/s on a core, and the client shares
 * this machine's two cores with the server and PostgreSQL. Raw reads hand over up to
 * 64 KiB at once, and events are found where they lie in the read buffer. */

static void grow(unsigned char **buf, size_t *cap, size_t need) {
  if (need <= *cap) return;
  *cap = need * 2 > 4096 ? need * 2 : 4096;
  *buf = sb_xrealloc(*buf, *cap);
}

static void append(unsigned char **buf, size_t *len, size_t *cap, const unsigned char *p, size_t n) {
  grow(buf, cap, *len + n);
  memcpy(*buf + *len, p, n);
  *len += n;
}

static void queue_send(session_t *s, int what) {
  s->out |= (uint8_t)what;
  lws_callback_on_writable(s->wsi);
}

static void show(const char *what, const session_t *s, const char *msg, size_t len) {
  static int shown;
  if (shown++ < SHOW_MAX)
    fprintf(stderr, "client %d: %s: %.*s\n", s->index, what, (int)(len > 300 ? 300 : len), msg);
}

/* Writes one masked frame (client frames must be masked). */
static int send_frame(struct lws *wsi, const session_t *s, int opcode, const void *data, size_t len) {
  unsigned char buf[LWS_PRE + 8 + 512], *p = buf + LWS_PRE, *h = p;
  if (len > 512) return -1;
  *h++ = (unsigned char)(0x80 | opcode);
  if (len < 126) {
    *h++ = (unsigned char)(0x80 | len);
  } else {
    *h++ = 0x80 | 126;
    *h++ = (unsigned char)(len >> 8);
    *h++ = (unsigned char)len;
  }
  memcpy(h, s->mask, 4);
  h += 4;
  for (size_t i = 0; i < len; i++) h[i] = ((const unsigned char *)data)[i] ^ s->mask[i & 3];
  size_t n = (size_t)(h - p) + len;
  return lws_write(wsi, p, n, LWS_WRITE_RAW) == (int)n ? 0 : -1;
}

static int on_writeable(struct lws *wsi, session_t *s) {
  char msg[512];
  int n;
  if (s->out & OUT_UPGRADE) {
    s->out &= (uint8_t)~OUT_UPGRADE;
    unsigned char buf[LWS_PRE + 1024], *p = buf + LWS_PRE;
    n = snprintf((char *)p, 1024,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 opt.path, opt.host, opt.port, s->key);
    s->state = S_HANDSHAKE;
    if (lws_write(wsi, p, (size_t)n, LWS_WRITE_RAW) != n) return -1;
  } else if (s->out & OUT_PONG) {
    s->out &= (uint8_t)~OUT_PONG;
    if (send_frame(wsi, s, 0xA, s->pong, s->pong_len) != 0) return -1;
  } else if (s->out & OUT_AUTH) {
    s->out &= (uint8_t)~OUT_AUTH;
    n = snprintf(msg, sizeof msg, "{\"type\":\"auth\",\"token\":\"%s\"}", opt.token);
    if (send_frame(wsi, s, 0x1, msg, (size_t)n) != 0) return -1;
  } else if (s->out & OUT_SUBSCRIBE) {
    s->out &= (uint8_t)~OUT_SUBSCRIBE;
    n = snprintf(msg, sizeof msg, "{\"type\":\"subscribe\",\"id\":\"all\"}");
    if (send_frame(wsi, s, 0x1, msg, (size_t)n) != 0) return -1;
  }
  if (s->out) lws_callback_on_writable(wsi);
  return 0;
}

static void on_message(session_t *s, const char *msg, size_t len, int64_t now) {
  scan_t sc = {msg, msg + len};
  B.messages++;
  if (opt.plain) {
    if (!scan_event(&sc, s, now)) B.bad++, show("unreadable event", s, msg, len);
    return;
  }
  const char *key, *type = "";
  size_t klen, tlen = 0;
  bool ok = true, first = true;
  while (ok && next_member(&sc, first, &key, &klen, &ok)) {
    first = false;
    if (KEY_IS(key, klen, "type")) {
      ok = scan_string(&sc, &type, &tlen);
    } else if (KEY_IS(key, klen, "events")) {
      skip_ws(&sc);
      if (sc.p >= sc.end || *sc.p != '[') {
        ok = false;
        break;
      }
      sc.p++;
      for (;;) {
        skip_ws(&sc);
        if (sc.p < sc.end && *sc.p == ']') {
          sc.p++;
          break;
        }
        if (!scan_event(&sc, s, now)) {
          ok = false;
          break;
        }
        skip_ws(&sc);
        if (sc.p < sc.end && *sc.p == ',') sc.p++;
      }
    } else {
      ok = skip_value(&sc);
    }
  }
  if (!ok) {
    B.bad++;
    show("unreadable message", s, msg, len);
  } else if (KEY_IS(type, tlen, "authenticated")) {
    queue_send(s, OUT_SUBSCRIBE);
  } else if (KEY_IS(type, tlen, "subscribed")) {
    if (s->state == S_OPEN) s->state = S_READY, s->subscribed = true, B.ready++;
  } else if (KEY_IS(type, tlen, "overflow")) {
    s->overflowed = true;
    B.overflows++;
    show("overflow", s, msg, len);
  } else if (KEY_IS(type, tlen, "error")) {
    B.errors++;
    show("error", s, msg, len);
  }
}

static void opened(session_t *s) {
  B.open++;
  s->state = S_OPEN;
  if (opt.plain) s->state = S_READY, s->subscribed = true, B.ready++;
  else queue_send(s, OUT_AUTH);
}

/* The server's answer to the upgrade: bytes used, 0 when incomplete, -1 when refused. */
static long handshake(session_t *s, const unsigned char *p, size_t n) {
  const char *end = memmem(p, n, "\r\n\r\n", 4);
  if (!end) return n > 8192 ? -1 : 0;
  size_t hlen = (size_t)(end - (const char *)p) + 4;
  char head[8192];
  snprintf(head, sizeof head, "%.*s", (int)hlen, (const char *)p);
  bool ok = strncmp(head, "HTTP/1.1 101", 12) == 0;
  const char *a = strcasestr(head, "\r\nsec-websocket-accept:");
  if (ok && a) {
    a += 23;
    while (*a == ' ') a++;
    ok = strncmp(a, s->accept, strlen(s->accept)) == 0;
  }
  if (!ok || !a) {
    show("upgrade refused", s, head, hlen);
    return -1;
  }
  opened(s);
  return (long)hlen;
}

/* One complete frame. -1 closes the connection. */
static int on_frame(session_t *s, int fin, int opcode, const unsigned char *data, size_t len, int64_t now) {
  switch (opcode) {
  case 0x0: /* continuation */
    if (!s->in_fragmented) return -1;
    append(&s->frag, &s->frag_len, &s->frag_cap, data, len);
    if (fin) {
      s->in_fragmented = false;
      on_message(s, (const char *)s->frag, s->frag_len, now);
    }
    return 0;
  case 0x1:
  case 0x2:
    if (fin) {
      on_message(s, (const char *)data, len, now);
    } else {
      s->frag_len = 0;
      s->in_fragmented = true;
      append(&s->frag, &s->frag_len, &s->frag_cap, data, len);
    }
    return 0;
  case 0x8: /* close */
    s->close_code = len >= 2 ? data[0] << 8 | data[1] : 1005;
    return -1;
  case 0x9: /* ping */
    if (len > sizeof s->pong) return -1;
    memcpy(s->pong, data, len);
    s->pong_len = (uint8_t)len;
    queue_send(s, OUT_PONG);
    return 0;
  case 0xA:
    return 0;
  default:
    return -1;
  }
}

/* Frames in p[0..n): bytes used (a trailing incomplete frame is left), -1 to close. */
static long parse_frames(session_t *s, const unsigned char *p, size_t n, int64_t now) {
  size_t at = 0;
  while (n - at >= 2) {
    const unsigned char *h = p + at;
    size_t hlen = 2, len = h[1] & 0x7f;
    if (h[1] & 0x80) return -1; /* servers never mask */
    if (len == 126) {
      if (n - at < 4) break;
      len = (size_t)h[2] << 8 | h[3];
      hlen = 4;
    } else if (len == 127) {
      if (n - at < 10) break;
      len = 0;
      for (int i = 2; i < 10; i++) len = len << 8 | h[i];
      hlen = 10;
    }
    if (n - at - hlen < len) break;
    if (on_frame(s, h[0] >> 7, h[0] & 0x0f, h + hlen, len, now) != 0) return -1;
    at += hlen + len;
  }
  return (long)at;
}

/* Bytes read from a connection: the upgrade answer, then frames (one may straddle reads). */
static int on_rx_at(session_t *s, const unsigned char *in, size_t len, int64_t now) {
  const unsigned char *p = in;
  size_t n = len;
  if (s->acc_len) { /* continue the incomplete frame left by the last read */
    append(&s->acc, &s->acc_len, &s->acc_cap, in, len);
    p = s->acc;
    n = s->acc_len;
  }
  long used = 0, m;
  if (s->state == S_HANDSHAKE) {
    if ((used = handshake(s, p, n)) <= 0) {
      if (used < 0) return -1;
      if (p == in) append(&s->acc, &s->acc_len, &s->acc_cap, in, len);
      return 0;
    }
  }
  if ((m = parse_frames(s, p + used, n - (size_t)used, now)) < 0) return -1;
  used += m;
  size_t left = n - (size_t)used;
  if (p == s->acc) memmove(s->acc, s->acc + used, left);
  else if (left) append(&s->acc, &s->acc_len, &s->acc_cap, p + used, left);
  s->acc_len = left;
  return 0;
}

static int on_rx(session_t *s, const unsigned char *in, size_t len) {
  int64_t now = realtime_ns();
  long before = B.deliveries;
  int rc = on_rx_at(s, in, len, now);
  if (B.deliveries != before) B.last_delivery_mono = sb_now_ns();
  return rc;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  session_t *s = lws_get_opaque_user_data(wsi);
  (void)user;
  if (!s) return 0;
  switch (reason) {
  case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    B.failed++;
    s->state = S_FAILED;
    s->wsi = NULL;
    if (B.failed <= SHOW_MAX)
      fprintf(stderr, "client %d: connection failed: %s\n", s->index, in ? (const char *)in : "?");
    break;
  case LWS_CALLBACK_RAW_CONNECTED:
    queue_send(s, OUT_UPGRADE);
    break;
  case LWS_CALLBACK_RAW_WRITEABLE:
    return on_writeable(wsi, s);
  case LWS_CALLBACK_RAW_RX:
    return on_rx(s, in, len);
  case LWS_CALLBACK_RAW_CLOSE:
    if (s->state == S_FAILED) {
      s->wsi = NULL;
      break;
    }
    if (B.phase != P_DONE) {
      if (s->state == S_HANDSHAKE || s->state == S_CONNECTING) B.failed++;
      else B.closed_early++;
      if (B.closed_early + B.failed <= SHOW_MAX)
        fprintf(stderr, "client %d: closed by the server (code %d)\n", s->index, s->close_code);
    }
    s->state = S_CLOSED;
    s->wsi = NULL;
    break;
  default:
    break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"events-bench", callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void connect_one(session_t *s) {
  unsigned char rnd[20], digest[20];
  lws_get_random(B.ctx, rnd, sizeof rnd);
  lws_b64_encode_string((const char *)rnd, 16, s->key, sizeof s->key);
  memcpy(s->mask, rnd + 16, 4);
  char both[96];
  int n = snprintf(both, sizeof both, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", s->key);
  EVP_Digest(both, (size_t)n, digest, NULL, EVP_sha1(), NULL);
  lws_b64_encode_string((const char *)digest, 20, s->accept, sizeof s->accept);

  struct lws_client_connect_info cc;
  memset(&cc, 0, sizeof cc);
  cc.context = B.ctx;
  cc.address = opt.host;
  cc.port = opt.port;
  cc.method = "RAW";
  cc.local_protocol_name = "events-bench";
  cc.opaque_user_data = s;
  cc.pwsi = &s->wsi;
  s->state = S_CONNECTING;
  B.started++;
  if (!lws_client_connect_via_info(&cc) && s->state == S_CONNECTING) {
    s->state = S_FAILED;
    B.failed++;
  }
}

static double since_s(uint64_t t0) { return (double)(sb_now_ns() - t0) / 1e9; }

/* Every client that is still connected has every event produced. */
static bool drained(void) {
  long want = atomic_load(&produced);
  for (int i = 0; i < opt.clients; i++) {
    session_t *s = &B.sessions[i];
    if (s->state == S_READY && s->received < want) return false;
  }
  return true;
}

static void sample_start(void) {
  if (opt.server_pid) {
    B.rss_idle_clients_kb = proc_rss_kb(opt.server_pid);
    B.server_cpu0 = proc_cpu_s(opt.server_pid);
  }
  machine_cpu(&B.machine_busy0, &B.machine_all0);
  B.self_cpu0 = thread_cpu_s();
}

static void sample_end(void) {
  if (opt.server_pid) {
    B.rss_end_kb = proc_rss_kb(opt.server_pid);
    B.server_cpu1 = proc_cpu_s(opt.server_pid);
  }
  machine_cpu(&B.machine_busy1, &B.machine_all1);
  B.self_cpu1 = thread_cpu_s();
}

/* Ends the service loop: with an event library lws_service() runs its loop until the
 * context is destroyed; with poll() it returns and sees `done`. */
static void finish(void) {
  B.run_t1 = sb_now_ns();
  B.phase = P_DONE;
  B.done = true;
  if (B.libev) lws_context_destroy(B.ctx);
}

/* The phases, driven every TICK_US by the service thread. */
static void tick(lws_sorted_usec_list_t *sul) {
  switch (B.phase) {
  case P_CONNECT:
    while (B.started < opt.clients && B.started - B.open - B.failed < HANDSHAKES_IN_FLIGHT)
      connect_one(&B.sessions[B.started]);
    if (B.ready + B.failed + B.closed_early < opt.clients && since_s(B.connect_t0) < 120) break;
    B.connect_s = since_s(B.connect_t0);
    fprintf(stderr, "%d/%d clients %s in %.1f s\n", B.ready, opt.clients,
            opt.plain ? "connected" : "subscribed", B.connect_s);
    if (B.ready == 0) { /* nothing to measure */
      B.run_t0 = sb_now_ns();
      finish();
      return;
    }
    B.phase = P_SETTLE;
    B.phase_t0 = sb_now_ns();
    break;
  case P_SETTLE:
    if (since_s(B.phase_t0) < SETTLE_S) break;
    sample_start();
    B.run_t0 = sb_now_ns();
    atomic_store(&start_mono_ns, B.run_t0);
    atomic_store(&go, true);
    B.phase = P_RUN;
    break;
  case P_RUN:
    if (since_s(B.run_t0) < opt.seconds && atomic_load(&producers_done) < opt.producers) break;
    atomic_store(&stop_producing, true);
    B.phase = P_DRAIN;
    B.phase_t0 = sb_now_ns();
    break;
  case P_DRAIN: {
    if (atomic_load(&producers_done) < opt.producers) break;
    uint64_t idle_since = B.last_delivery_mono > B.phase_t0 ? B.last_delivery_mono : B.phase_t0;
    if (drained() || since_s(idle_since) > DRAIN_IDLE_S || since_s(B.phase_t0) > opt.drain_max_s) {
      sample_end();
      finish();
      return;
    }
    break;
  }
  case P_DONE:
    return;
  }
  lws_sul_schedule(B.ctx, 0, sul, tick, TICK_US);
}

/* ---- report ---- */

static void report(void) {
  long want = atomic_load(&produced);
  /* Events that arrived before their commit time was noted: their commit is known now. */
  for (size_t i = 0; i < B.npending; i++) {
    int64_t c = atomic_load(&commit_ns[B.pending[i].event]);
    if (c == 0) {
      B.unresolved++;
      continue;
    }
    if (B.pending[i].received_ns < c) B.early++;
    if (B.pending[i].received_ns - c > B.hist.max_ns)
      B.max_event = B.pending[i].event, B.max_event_commit = c;
    hist_add(&B.hist, B.pending[i].received_ns - c);
    timeline_add(c, atomic_load(&commit_ns[0]), B.pending[i].received_ns - c);
  }
  long missing = 0, dups = 0, ooo = 0;
  int c_missing = 0, c_dups = 0, c_ooo = 0, shown = 0, overflowed = 0;
  for (int i = 0; i < opt.clients; i++) {
    session_t *s = &B.sessions[i];
    if (!s->subscribed) continue;
    long m = want - s->received;
    if (s->overflowed) overflowed++;
    missing += m;
    dups += s->duplicates;
    ooo += s->out_of_order;
    c_missing += m > 0;
    c_dups += s->duplicates > 0;
    c_ooo += s->out_of_order > 0;
    if ((m || s->duplicates || s->out_of_order) && shown++ < SHOW_MAX)
      printf("  client %d: received %ld of %ld, %ld missing, %ld duplicates, %ld out of order%s\n",
             i, s->received, want, m, s->duplicates, s->out_of_order,
             s->state == S_CLOSED ? " (closed by the server)" : "");
  }
  double run_s = (double)(B.run_t1 - B.run_t0) / 1e9;
  double deliver_s = (double)((B.last_delivery_mono > B.run_t0 ? B.last_delivery_mono : B.run_t1) - B.run_t0) / 1e9;
  double produce_s = opt.seconds < run_s ? opt.seconds : run_s;
  double produce_rate = produce_s > 0 ? want / produce_s : 0;
  double per_s = B.deliveries / (deliver_s > 0 ? deliver_s : 1);
  double server_cpu = opt.server_pid ? (B.server_cpu1 - B.server_cpu0) / run_s * 100 : 0;
  double machine = (B.machine_busy1 - B.machine_busy0) / (B.machine_all1 - B.machine_all0 + 1e-9) * 100;
  double self = (B.self_cpu1 - B.self_cpu0) / run_s * 100;
  const histogram_t *h = &B.hist;
  char target[32] = "as fast as possible";
  if (opt.rate > 0) snprintf(target, sizeof target, "%.0f/s", opt.rate);
  printf("%s, %d clients (%d ready), %ld events produced in %.1f s (%.0f/s; target %s) by "
         "%d producer connections\n",
         opt.plain ? "plain (one event per message)" : "solobase protocol", opt.clients, B.ready,
         want, produce_s, produce_rate, target, opt.producers);
  printf("  deliveries: %ld in %.2f s = %.0f/s (%ld messages, %.2f events per message)\n",
         B.deliveries, deliver_s, per_s, B.messages, B.messages ? (double)B.deliveries / B.messages : 0);
  printf("  commit to receipt: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%lu samples; %ld received "
         "before the producer noted the commit)\n",
         hist_pct_ms(h, 0.50), hist_pct_ms(h, 0.99), (double)h->max_ns / 1e6, (unsigned long)h->n, B.early);
  if (h->n)
    printf("  the slowest delivery: event %ld of %ld, committed %.3f s after the first\n", B.max_event + 1,
           want, (double)(B.max_event_commit - atomic_load(&commit_ns[0])) / 1e9);
  printf("  by second of commit, the slowest delivery in ms (and the share over 10 ms):");
  for (int i = 0; i < TIMELINE_S; i++)
    if (timeline.n[i])
      printf(" %d: %.0f (%.0f%%)", i, (double)timeline.max_ns[i] / 1e6,
             100.0 * (double)timeline.over10[i] / (double)timeline.n[i]);
  printf("\n");
  printf("  checks: %ld missing (%d clients), %ld duplicates (%d clients), %ld out of order (%d clients), "
         "%ld foreign events, %ld unreadable messages, %ld errors, %d overflowed, %d closed early\n",
         missing, c_missing, dups, c_dups, ooo, c_ooo, B.foreign, B.bad, B.errors, overflowed, B.closed_early);
  if (opt.server_pid)
    printf("  server pid %d: RSS %.1f MiB with the clients connected (idle), %.1f MiB at the end; "
           "CPU %.0f%% of a core (%.2f us per delivery)\n",
           opt.server_pid, B.rss_idle_clients_kb / 1024.0, B.rss_end_kb / 1024.0, server_cpu,
           B.deliveries ? (B.server_cpu1 - B.server_cpu0) * 1e6 / B.deliveries : 0);
  printf("  this client's service thread: %.0f%% of a core; machine busy %.0f%%\n", self, machine);
  printf("RESULT mode=%s clients=%d ready=%d connect_s=%.2f produced=%ld produce_rate=%.0f "
         "deliveries=%ld deliveries_per_s=%.0f messages=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f "
         "missing=%ld clients_missing=%d duplicates=%ld out_of_order=%ld foreign=%ld bad=%ld "
         "errors=%ld overflowed=%d closed_early=%d insert_failed=%ld server_rss_kb_clients=%ld "
         "server_rss_kb_end=%ld server_cpu_pct=%.0f client_cpu_pct=%.0f machine_cpu_pct=%.0f\n",
         opt.plain ? "plain" : "solobase", opt.clients, B.ready, B.connect_s, want, produce_rate,
         B.deliveries, per_s, B.messages, hist_pct_ms(h, 0.50), hist_pct_ms(h, 0.99),
         (double)h->max_ns / 1e6, missing, c_missing, dups, ooo, B.foreign, B.bad, B.errors,
         overflowed, B.closed_early, atomic_load(&produce_failed), B.rss_idle_clients_kb,
         B.rss_end_kb, server_cpu, self, machine);
}

/* ---- main ---- */

static void usage(void) {
  fputs("usage: events_bench --url ws://HOST:PORT/PATH [--token TOKEN] [--plain] [--clients N]\n"
        "                    [--rate EVENTS_PER_S (0: max)] [--seconds S] [--producers N]\n"
        "                    [--max-events N] [--drain S] [--server-pid PID]\n"
        "DATABASE_URL: the management database the producers insert into.\n"
        "TOKEN defaults to $SOLOBASE_TOKEN; --plain is the Node baseline (no protocol).\n",
        stderr);
  exit(2);
}

static void parse_args(int argc, char **argv) {
  static const struct option opts[] = {
      {"url", required_argument, NULL, 'u'},       {"token", required_argument, NULL, 't'},
      {"plain", no_argument, NULL, 'P'},           {"clients", required_argument, NULL, 'c'},
      {"rate", required_argument, NULL, 'r'},      {"seconds", required_argument, NULL, 's'},
      {"producers", required_argument, NULL, 'p'}, {"max-events", required_argument, NULL, 'm'},
      {"drain", required_argument, NULL, 'd'},     {"server-pid", required_argument, NULL, 'S'},
      {"help", no_argument, NULL, 'h'},            {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "u:t:Pc:r:s:p:m:d:S:h", opts, NULL)) != -1) {
    switch (c) {
    case 'u': opt.url = optarg; break;
    case 't': opt.token = optarg; break;
    case 'P': opt.plain = true; break;
    case 'c': opt.clients = atoi(optarg); break;
    case 'r': opt.rate = atof(optarg); break;
    case 's': opt.seconds = atoi(optarg); break;
    case 'p': opt.producers = atoi(optarg); break;
    case 'm': opt.max_events = atol(optarg); break;
    case 'd': opt.drain_max_s = atoi(optarg); break;
    case 'S': opt.server_pid = atoi(optarg); break;
    default: usage();
    }
  }
  if (!opt.token) opt.token = getenv("SOLOBASE_TOKEN");
  opt.database_url = getenv("DATABASE_URL");
  if (!opt.url || optind < argc || opt.clients < 1 || opt.seconds < 1 || opt.producers < 1 ||
      opt.producers > MAX_PRODUCERS || opt.rate < 0)
    usage();
  if (!opt.database_url) fail("settings", "DATABASE_URL is not set");
  if (!opt.plain && (!opt.token || strlen(opt.token) > 400)) fail("settings", "a token is needed (--token)");
  if (sscanf(opt.url, "ws://%255[^:/]:%d%255s", opt.host, &opt.port, opt.path) < 2)
    fail("--url", "expected ws://HOST:PORT/PATH");
  if (!opt.path[0]) strcpy(opt.path, "/");
  if (!opt.max_events)
    opt.max_events = opt.rate > 0 ? (long)(opt.rate * opt.seconds) + 1000 : 200000;
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  sb_error_t err;
  unsigned char rnd[4];
  if (sb_random_bytes(rnd, sizeof rnd, &err) != 0) fail("random", err.msg);
  sb_hex_encode(rnd, sizeof rnd, nonce);

  commit_ns = sb_xcalloc((size_t)opt.max_events, sizeof *commit_ns);
  B.pending = sb_xcalloc(PENDING_MAX, sizeof *B.pending);
  B.sessions = sb_xcalloc((size_t)opt.clients, sizeof *B.sessions);
  size_t words = ((size_t)opt.max_events + 63) / 64;
  for (int i = 0; i < opt.clients; i++) {
    B.sessions[i].index = i;
    B.sessions[i].last_id = -1;
    B.sessions[i].seen = sb_xcalloc(words, sizeof(uint64_t));
  }

  pthread_t th[MAX_PRODUCERS];
  for (int i = 0; i < opt.producers; i++) pthread_create(&th[i], NULL, producer, NULL);

  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.gid = -1;
  info.uid = -1;
  info.pt_serv_buf_size = 65536;
  /* epoll through the libev plugin (Debian: libwebsockets-evlib-ev) costs a quarter
   * less per read than lws's poll() of every socket; poll() is the fallback. */
  info.options = LWS_SERVER_OPTION_LIBEV;
  B.libev = (B.ctx = lws_create_context(&info)) != NULL;
  if (!B.ctx) {
    fprintf(stderr, "events_bench: no libev plugin for libwebsockets; using poll()\n");
    info.options = 0;
    B.ctx = lws_create_context(&info);
  }
  if (!B.ctx) fail("libwebsockets", "cannot create the context");

  B.connect_t0 = sb_now_ns();
  lws_sul_schedule(B.ctx, 0, &B.tick, tick, 1);
  while (!B.done && lws_service(B.ctx, 0) >= 0)
    continue;
  atomic_store(&stop_producing, true);
  atomic_store(&go, true);
  for (int i = 0; i < opt.producers; i++) pthread_join(th[i], NULL);
  report();
  lws_context_destroy(B.ctx);
  for (int i = 0; i < opt.clients; i++) {
    free(B.sessions[i].seen);
    free(B.sessions[i].acc);
    free(B.sessions[i].frag);
  }
  free(B.sessions);
  free(B.pending);
  free(commit_ns);
  return 0;
}

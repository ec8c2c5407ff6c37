/*
 * sbtest_net.c: websocket and HTTP clients for tests (see sbtest_net.h).
 *
 * Each websocket client has its own libwebsockets context and service thread. The test
 * thread talks to it through two locked queues: messages to send (the service thread
 * is woken with lws_cancel_service and writes them when the socket is writable) and
 * messages received.
 */
#include "sbtest_net.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

typedef struct msg {
  char *text;
  size_t len;
  struct msg *next;
} msg_t;

struct sbt_ws {
  struct lws_context *ctx;
  struct lws *wsi;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  msg_t *out_head, *out_tail; /* to send */
  msg_t *in_head, *in_tail;   /* received */
  char *rx;                   /* a message being received */
  size_t rxlen;
  bool established, failed, closed, stop, want_stop_reading, want_resume_reading, want_close;
  int close_code, http_status;
  char token[256];
};

static void push(msg_t **head, msg_t **tail, msg_t *m) {
  m->next = NULL;
  if (*tail) (*tail)->next = m;
  else *head = m;
  *tail = m;
}

static msg_t *pop(msg_t **head, msg_t **tail) {
  msg_t *m = *head;
  if (m) {
    *head = m->next;
    if (!*head) *tail = NULL;
  }
  return m;
}

static void finish(sbt_ws_t *c, bool failed) {
  pthread_mutex_lock(&c->mu);
  if (failed) c->failed = true;
  c->closed = true;
  if (!c->close_code) c->close_code = 1006;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len) {
  (void)user;
  struct lws_context *ctx = lws_get_context(wsi);
  sbt_ws_t *c = ctx ? lws_context_user(ctx) : NULL;
  if (!c) return 0;
  switch (reason) {
  case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER: {
    if (!c->token[0]) break;
    unsigned char **p = (unsigned char **)in, *end = *p + len;
    char value[300];
    int n = snprintf(value, sizeof value, "Bearer %s", c->token);
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"authorization:",
                                    (const unsigned char *)value, n, p, end))
      return -1;
    break;
  }
  case LWS_CALLBACK_CLIENT_ESTABLISHED:
    pthread_mutex_lock(&c->mu);
    c->established = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    break;
  case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    c->http_status = (int)lws_http_client_http_response(wsi);
    c->wsi = NULL;
    finish(c, true);
    break;
  case LWS_CALLBACK_CLIENT_RECEIVE: {
    if (lws_is_first_fragment(wsi)) c->rxlen = 0;
    c->rx = sb_xrealloc(c->rx, c->rxlen + len + 1);
    memcpy(c->rx + c->rxlen, in, len);
    c->rxlen += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) break;
    msg_t *m = sb_xcalloc(1, sizeof *m);
    m->text = sb_xmalloc(c->rxlen + 1);
    memcpy(m->text, c->rx, c->rxlen);
    m->text[c->rxlen] = '\0';
    m->len = c->rxlen;
    pthread_mutex_lock(&c->mu);
    push(&c->in_head, &c->in_tail, m);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    break;
  }
  case LWS_CALLBACK_CLIENT_WRITEABLE: {
    pthread_mutex_lock(&c->mu);
    msg_t *m = pop(&c->out_head, &c->out_tail);
    bool more = c->out_head != NULL, closing = c->want_close;
    pthread_mutex_unlock(&c->mu);
    if (m) {
      unsigned char *buf = sb_xmalloc(LWS_PRE + m->len + 1);
      memcpy(buf + LWS_PRE, m->text, m->len);
      int n = lws_write(wsi, buf + LWS_PRE, m->len, LWS_WRITE_TEXT);
      free(buf);
      free(m->text);
      free(m);
      if (n < 0) return -1;
    }
    if (more) {
      lws_callback_on_writable(wsi);
    } else if (closing) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
      return -1;
    }
    break;
  }
  case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
    if (len >= 2) {
      const unsigned char *b = in;
      pthread_mutex_lock(&c->mu);
      c->close_code = (b[0] << 8) | b[1];
      pthread_mutex_unlock(&c->mu);
    }
    break;
  case LWS_CALLBACK_CLIENT_CLOSED:
    c->wsi = NULL;
    finish(c, false);
    break;
  case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
    if (!c->wsi) break;
    pthread_mutex_lock(&c->mu);
    bool send = c->out_head != NULL || c->want_close, stop_reading = c->want_stop_reading;
    bool resume_reading = c->want_resume_reading;
    c->want_stop_reading = c->want_resume_reading = false;
    pthread_mutex_unlock(&c->mu);
    if (send) lws_callback_on_writable(c->wsi);
    if (stop_reading) lws_rx_flow_control(c->wsi, 0);
    if (resume_reading) lws_rx_flow_control(c->wsi, 1);
    break;
  default:
    break;
  }
  return 0;
}

static const struct lws_protocols protocols[] = {
    {"solobase.events.v1", callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void *service(void *arg) {
  sbt_ws_t *c = arg;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    bool stop = c->stop;
    pthread_mutex_unlock(&c->mu);
    if (stop) break;
    lws_service(c->ctx, 0);
  }
  return NULL;
}

static void deadline_in(struct timespec *ts, int ms) {
  clock_gettime(CLOCK_REALTIME, ts);
  ts->tv_sec += ms / 1000;
  ts->tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts->tv_nsec >= 1000000000L) ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static void quiet(void) { lws_set_log_level(LLL_ERR, NULL); }

sbt_ws_t *sbt_ws_connect(int port, const char *path, const char *token, int *http_status) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, quiet);
  sbt_ws_t *c = sb_xcalloc(1, sizeof *c);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (token) snprintf(c->token, sizeof c->token, "%s", token);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof info);
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols;
  info.user = c;
  info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
  c->ctx = lws_create_context(&info);
  if (!c->ctx) {
    free(c);
    return NULL;
  }
  struct lws_client_connect_info ci;
  memset(&ci, 0, sizeof ci);
  ci.context = c->ctx;
  ci.address = "127.0.0.1";
  ci.port = port;
  ci.path = path;
  ci.host = "127.0.0.1";
  ci.origin = "127.0.0.1";
  ci.protocol = protocols[0].name;
  ci.pwsi = &c->wsi;
  if (!lws_client_connect_via_info(&ci)) c->failed = c->closed = true;
  pthread_create(&c->thread, NULL, service, c);
  struct timespec until;
  deadline_in(&until, 10000);
  pthread_mutex_lock(&c->mu);
  while (!c->established && !c->closed)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) break;
  bool ok = c->established && !c->closed;
  pthread_mutex_unlock(&c->mu);
  if (http_status) *http_status = c->http_status;
  if (!ok) {
    sbt_ws_free(c);
    return NULL;
  }
  return c;
}

void sbt_ws_send(sbt_ws_t *c, const char *text, long len) {
  msg_t *m = sb_xcalloc(1, sizeof *m);
  m->len = len < 0 ? strlen(text) : (size_t)len;
  m->text = sb_xmalloc(m->len + 1);
  memcpy(m->text, text, m->len);
  pthread_mutex_lock(&c->mu);
  push(&c->out_head, &c->out_tail, m);
  pthread_mutex_unlock(&c->mu);
  lws_cancel_service(c->ctx);
}

char *sbt_ws_recv(sbt_ws_t *c, int timeout_ms) {
  struct timespec until;
  deadline_in(&until, timeout_ms);
  pthread_mutex_lock(&c->mu);
  while (!c->in_head && !c->closed)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) break;
  msg_t *m = pop(&c->in_head, &c->in_tail);
  pthread_mutex_unlock(&c->mu);
  if (!m) return NULL;
  char *text = m->text;
  free(m);
  return text;
}

char *sbt_ws_recv_type(sbt_ws_t *c, const char *type, int timeout_ms) {
  char want[80];
  snprintf(want, sizeof want, "\"type\":\"%s\"", type);
  uint64_t end = sb_now_ns() + (uint64_t)timeout_ms * 1000000ull;
  for (;;) {
    uint64_t now = sb_now_ns();
    if (now >= end) return NULL;
    char *m = sbt_ws_recv(c, (int)((end - now) / 1000000ull) + 1);
    if (!m) return NULL;
    if (strstr(m, want)) return m;
    free(m);
  }
}

void sbt_ws_stop_reading(sbt_ws_t *c) {
  pthread_mutex_lock(&c->mu);
  c->want_stop_reading = true;
  pthread_mutex_unlock(&c->mu);
  lws_cancel_service(c->ctx);
}

void sbt_ws_resume_reading(sbt_ws_t *c) {
  pthread_mutex_lock(&c->mu);
  c->want_resume_reading = true;
  pthread_mutex_unlock(&c->mu);
  lws_cancel_service(c->ctx);
}

int sbt_ws_wait_closed(sbt_ws_t *c, int timeout_ms) {
  struct timespec until;
  deadline_in(&until, timeout_ms);
  pthread_mutex_lock(&c->mu);
  while (!c->closed)
    if (pthread_cond_timedwait(&c->cv, &c->mu, &until) != 0) break;
  int code = c->closed ? c->close_code : -1;
  pthread_mutex_unlock(&c->mu);
  return code;
}

void sbt_ws_free(sbt_ws_t *c) {
  if (!c) return;
  pthread_mutex_lock(&c->mu);
  bool open = !c->closed && c->wsi;
  c->want_close = true;
  pthread_mutex_unlock(&c->mu);
  if (open) {
    lws_cancel_service(c->ctx);
    sbt_ws_wait_closed(c, 2000);
  }
  pthread_mutex_lock(&c->mu);
  c->stop = true;
  pthread_mutex_unlock(&c->mu);
  lws_cancel_service(c->ctx);
  pthread_join(c->thread, NULL);
  lws_context_destroy(c->ctx);
  for (msg_t *m; (m = pop(&c->in_head, &c->in_tail));) free(m->text), free(m);
  for (msg_t *m; (m = pop(&c->out_head, &c->out_tail));) free(m->text), free(m);
  free(c->rx);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}

/* ---- HTTP ---- */

typedef struct {
  char *p;
  size_t len;
} growbuf_t;

static size_t on_data(char *data, size_t size, size_t n, void *ud) {
  growbuf_t *b = ud;
  size_t add = size * n;
  b->p = sb_xrealloc(b->p, b->len + add + 1);
  memcpy(b->p + b->len, data, add);
  b->len += add;
  b->p[b->len] = '\0';
  return add;
}

char *sbt_http(int port, const char *method, const char *path, const char *token,
               const char *content_type, const char *body, long *status) {
  CURL *curl = curl_easy_init();
  growbuf_t b = {sb_xstrdup(""), 0};
  char url[512], auth[300], ct[200];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  struct curl_slist *headers = NULL;
  if (token) {
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    headers = curl_slist_append(headers, auth);
  }
  if (body) {
    snprintf(ct, sizeof ct, "Content-Type: %s", content_type ? content_type : "application/json");
    headers = curl_slist_append(headers, ct);
  }
  headers = curl_slist_append(headers, "Expect:");
  curl_easy_setopt(curl, CURLOPT_URL, url);
  curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (body) {
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  }
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  *status = 0;
  if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return b.p;
}

int sbt_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

/*
 * sbtest_net.h: real network clients for tests: websockets (libwebsockets, one context
 * and service thread per client, so a test reads like a script) and HTTP (libcurl).
 */
#ifndef SBTEST_NET_H
#define SBTEST_NET_H

#include <stdbool.h>

typedef struct sbt_ws sbt_ws_t;

/* Connects to ws://127.0.0.1:port/path, with `Authorization: Bearer token` on the
 * upgrade when token is not NULL. NULL when the connection or handshake failed
 * (*http_status, when not NULL, gets the refusal's status if there was one). */
sbt_ws_t *sbt_ws_connect(int port, const char *path, const char *token, int *http_status);
/* Queues a text message (sent as one frame; `len` < 0: strlen). */
void sbt_ws_send(sbt_ws_t *c, const char *text, long len);
/* The next text message received (caller frees), or NULL after timeout_ms or when the
 * connection is closed and nothing is left. */
char *sbt_ws_recv(sbt_ws_t *c, int timeout_ms);
/* The next message whose "type" is `type`, skipping others (which are freed); NULL on
 * timeout. */
char *sbt_ws_recv_type(sbt_ws_t *c, const char *type, int timeout_ms);
/* Stops reading from the socket (a client that never reads). */
void sbt_ws_stop_reading(sbt_ws_t *c);
/* Reads from the socket again. */
void sbt_ws_resume_reading(sbt_ws_t *c);
/* Waits until the server closed the connection; its close code (1001...), or -1 on
 * timeout, or 1006 when it went away without a close frame. */
int sbt_ws_wait_closed(sbt_ws_t *c, int timeout_ms);
/* Closes (if open) and frees. */
void sbt_ws_free(sbt_ws_t *c);

/* An HTTP request to http://127.0.0.1:port/path. body may be NULL; content_type
 * defaults to application/json when there is a body. Returns the response body (caller
 * frees; "" when empty) and sets *status (0 when the request failed). */
char *sbt_http(int port, const char *method, const char *path, const char *token,
               const char *content_type, const char *body, long *status);

/* A port nobody listens on now (bind to 0, read, close). */
int sbt_free_port(void);

#endif

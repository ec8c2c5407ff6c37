/*
 * server.h: the HTTP and websocket server of `solobase serve` (libwebsockets).
 *
 * One service thread runs the libwebsockets event loop: it parses HTTP requests and
 * websocket messages, and writes answers and events; it never waits on the database.
 * Requests go to a pool of API workers (core/api.c), each with its own connection,
 * and their answers come back through a queue the loop drains when woken
 * (lws_cancel_service). A listener thread LISTENs on sb_events and sb_tokens: new events
 * are read in commit order and appended to a ring shared by every websocket client;
 * each client has a cursor into it and a filter, so one slow client costs the others
 * nothing (docs/events.md).
 */
#ifndef SB_SERVER_H
#define SB_SERVER_H

#include "engine.h"
#include "error.h"

typedef struct sb_httpd sb_httpd_t;

/* Starts listening on the `listen` setting with `api_workers` workers. */
sb_httpd_t *sb_httpd_start(sb_engine_t *engine, sb_error_t *err);
/* Stops accepting, lets requests in flight finish, closes websockets with 1001, and
 * frees everything. */
void sb_httpd_stop(sb_httpd_t *s);
/* The port actually listened on (useful with port 0). */
int sb_httpd_port(const sb_httpd_t *s);

#endif

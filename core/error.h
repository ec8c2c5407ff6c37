/*
 * error.h: the one error value every runtime failure returns.
 *
 * Functions that can fail at runtime take an sb_error_t * last and return -1 (or NULL)
 * with the reason written into it; programmer errors assert instead. The message is one
 * line meant for an operator, and never holds a secret. sqlstate is set when the
 * failure came from PostgreSQL, so callers can tell a constraint violation from a dead
 * connection without parsing text.
 */
#ifndef SB_ERROR_H
#define SB_ERROR_H

#include <stdarg.h>

typedef struct sb_error {
  char sqlstate[6]; /* "" when the failure did not come from PostgreSQL */
  char msg[2048];
} sb_error_t;

void sb_error_set(sb_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_error_vset(sb_error_t *err, const char *fmt, va_list ap);
/* Prepends "prefix: " to the message already in err. */
void sb_error_prefix(sb_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_error_clear(sb_error_t *err);

#endif

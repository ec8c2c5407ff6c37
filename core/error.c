/*
 * error.c: formatting of sb_error_t (see error.h).
 */
#include "error.h"

#include <stdio.h>
#include <string.h>

void sb_error_vset(sb_error_t *err, const char *fmt, va_list ap) {
  if (!err) return;
  err->sqlstate[0] = '\0';
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  /* One line: a message that spans lines breaks log parsing and CLI output. */
  for (char *p = err->msg; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
}

void sb_error_set(sb_error_t *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sb_error_vset(err, fmt, ap);
  va_end(ap);
}

void sb_error_prefix(sb_error_t *err, const char *fmt, ...) {
  if (!err) return;
  char prefix[512], old[sizeof err->msg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  memcpy(old, err->msg, sizeof old);
  snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
}

void sb_error_clear(sb_error_t *err) {
  if (!err) return;
  err->sqlstate[0] = '\0';
  err->msg[0] = '\0';
}

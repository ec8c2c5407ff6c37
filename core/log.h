/*
 * log.h: the engine's log, one line per record on stderr.
 *
 * Lines look like `2026-11-26T21:40:00.123Z info  db: connected to 127.0.0.1:5433`.
 * Callers never pass secrets: connection strings go through sb_redact_conninfo() first,
 * tenant passwords and tokens are never formatted at all.
 */
#ifndef SB_LOG_H
#define SB_LOG_H

#include <stddef.h>

typedef enum { SB_LOG_DEBUG, SB_LOG_INFO, SB_LOG_WARN, SB_LOG_ERROR } sb_log_level_t;

void sb_log_set_level(sb_log_level_t level);
sb_log_level_t sb_log_get_level(void);
/* Parses "debug", "info", "warn", "error"; returns -1 on anything else. */
int sb_log_parse_level(const char *name, sb_log_level_t *out);
void sb_log(sb_log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define sb_debug(c, ...) sb_log(SB_LOG_DEBUG, c, __VA_ARGS__)
#define sb_info(c, ...) sb_log(SB_LOG_INFO, c, __VA_ARGS__)
#define sb_warn(c, ...) sb_log(SB_LOG_WARN, c, __VA_ARGS__)
#define sb_error(c, ...) sb_log(SB_LOG_ERROR, c, __VA_ARGS__)

/* Copies a libpq connection string or URL into out with any password replaced by
 * "xxxxx", so it can be logged or shown. */
void sb_redact_conninfo(const char *conninfo, char *out, size_t outlen);

#endif

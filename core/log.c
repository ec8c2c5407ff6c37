/*
 * log.c: timestamped log lines on stderr, filtered by level (see log.h).
 */
#include "log.h"

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int current_level = SB_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void sb_log_set_level(sb_log_level_t level) { current_level = (int)level; }
sb_log_level_t sb_log_get_level(void) { return (sb_log_level_t)current_level; }

int sb_log_parse_level(const char *name, sb_log_level_t *out) {
  for (int i = 0; i < 4; i++)
    if (strcmp(name, level_names[i]) == 0) {
      *out = (sb_log_level_t)i;
      return 0;
    }
  return -1;
}

void sb_log(sb_log_level_t level, const char *component, const char *fmt, ...) {
  if ((int)level < current_level) return;
  struct timespec ts;
  struct tm tm;
  char stamp[32];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

  char line[2048];
  int n = snprintf(line, sizeof line, "%s.%03ldZ %-5s %s: ", stamp, ts.tv_nsec / 1000000L,
                   level_names[level], component);
  if (n < 0 || (size_t)n >= sizeof line) n = 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  /* One write per record so lines from different threads never interleave. */
  flockfile(stderr);
  fputs(line, stderr);
  fputc('\n', stderr);
  funlockfile(stderr);
}

void sb_redact_conninfo(const char *conninfo, char *out, size_t outlen) {
  if (!outlen) return;
  out[0] = '\0';
  if (!conninfo) return;
  char *errmsg = NULL;
  PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
  if (!opts) {
    PQfreemem(errmsg);
    snprintf(out, outlen, "(unparsable connection string)");
    return;
  }
  /* Rebuild from the parsed options: host, port, dbname and user are enough to
   * identify a server in a log line, and nothing else can leak. */
  const char *host = "", *port = "", *db = "", *user = "";
  int has_password = 0;
  for (PQconninfoOption *o = opts; o->keyword; o++) {
    if (!o->val) continue;
    if (strcmp(o->keyword, "host") == 0) host = o->val;
    else if (strcmp(o->keyword, "hostaddr") == 0 && !*host) host = o->val;
    else if (strcmp(o->keyword, "port") == 0) port = o->val;
    else if (strcmp(o->keyword, "dbname") == 0) db = o->val;
    else if (strcmp(o->keyword, "user") == 0) user = o->val;
    else if (strcmp(o->keyword, "password") == 0) has_password = 1;
  }
  snprintf(out, outlen, "postgresql://%s%s%s%s%s%s/%s", user, has_password ? ":xxxxx" : "",
           *user ? "@" : "", host, *port ? ":" : "", port, db);
  PQconninfoFree(opts);
}

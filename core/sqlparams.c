/*
 * sqlparams.c: $name to $n rewriting (see sqlparams.h).
 */
#include "sqlparams.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static bool ident_char(char c) { return isalnum((unsigned char)c) || c == '_'; }

typedef struct {
  char *buf;
  size_t len, cap;
} strbuf_t;

static void put(strbuf_t *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    while (b->len + n + 1 > b->cap) b->cap = b->cap ? b->cap * 2 : 256;
    b->buf = sb_xrealloc(b->buf, b->cap);
  }
  memcpy(b->buf + b->len, s, n);
  b->len += n;
  b->buf[b->len] = '\0';
}

int sb_sql_named_index(const sb_sql_named_t *p, const char *name) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->names[i], name) == 0) return i + 1;
  return 0;
}

/* Length of the quoted run starting at s (a quote char q, doubled to escape). */
static size_t quoted_len(const char *s, char q) {
  size_t i = 1;
  while (s[i]) {
    if (s[i] == q && s[i + 1] == q) i += 2;
    else if (s[i] == q) return i + 1;
    else i++;
  }
  return i;
}

int sb_sql_named_parse(const char *sql, sb_sql_named_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  strbuf_t b = {0};
  put(&b, "", 0);
  const char *s = sql;
  bool has_positional = false;
  while (*s) {
    size_t n;
    if (*s == '\'' || *s == '"') {
      n = quoted_len(s, *s);
    } else if (s[0] == '-' && s[1] == '-') {
      n = strcspn(s, "\n");
    } else if (s[0] == '/' && s[1] == '*') {
      const char *end = strstr(s + 2, "*/");
      n = end ? (size_t)(end - s) + 2 : strlen(s);
    } else if (s[0] == '$' && isdigit((unsigned char)s[1])) {
      has_positional = true;
      n = 1;
      while (isdigit((unsigned char)s[n])) n++;
    } else if (s[0] == '$' && (s[1] == '$' || ident_start(s[1]))) {
      size_t t = 1;
      while (ident_char(s[t])) t++;
      if (s[t] == '$') {
        /* Dollar quote $tag$...$tag$: copy through the closing tag. */
        char *tag = sb_xasprintf("%.*s", (int)t + 1, s);
        const char *end = strstr(s + t + 1, tag);
        n = end ? (size_t)(end - s) + strlen(tag) : strlen(s);
        free(tag);
      } else {
        char *name = sb_xasprintf("%.*s", (int)t - 1, s + 1);
        int idx = sb_sql_named_index(out, name);
        if (!idx) {
          out->names = sb_xrealloc(out->names, (size_t)(out->n + 1) * sizeof *out->names);
          out->names[out->n++] = name;
          idx = out->n;
        } else {
          free(name);
        }
        char num[16];
        int len = snprintf(num, sizeof num, "$%d", idx);
        put(&b, num, (size_t)len);
        s += t;
        continue;
      }
    } else {
      n = 1;
    }
    put(&b, s, n);
    s += n;
  }
  out->sql = b.buf;
  if (has_positional && out->n) {
    sb_error_set(err, "a statement may use $name or $1 parameters, not both");
    sb_sql_named_free(out);
    return -1;
  }
  return 0;
}

void sb_sql_named_free(sb_sql_named_t *p) {
  for (int i = 0; i < p->n; i++) free(p->names[i]);
  free(p->names);
  free(p->sql);
  memset(p, 0, sizeof *p);
}

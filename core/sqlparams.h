/*
 * sqlparams.h: named parameters ($user_id) turned into PostgreSQL's positional ones ($1).
 *
 * The specification writes its statements with named placeholders; this rewrites them
 * so they run unchanged with values bound by name. String literals, quoted identifiers,
 * comments and dollar-quoted bodies are copied untouched; positional $n stays as it is.
 * The same name used twice maps to the same position.
 */
#ifndef SB_SQLPARAMS_H
#define SB_SQLPARAMS_H

#include "error.h"

typedef struct sb_sql_named {
  char *sql;     /* rewritten statement */
  char **names;  /* names[i] is bound to $(i+1) */
  int n;
} sb_sql_named_t;

int sb_sql_named_parse(const char *sql, sb_sql_named_t *out, sb_error_t *err);
/* Position (1-based) of name, or 0. */
int sb_sql_named_index(const sb_sql_named_t *p, const char *name);
void sb_sql_named_free(sb_sql_named_t *p);

#endif

/*
 * embedded.c: lookup of the Lua sources compiled into the binary (see embedded.h).
 */
#include "embedded.h"

#include <string.h>

const sb_embedded_t *sb_embedded_find(const char *name) {
  for (const sb_embedded_t *e = sb_embedded_lua; e->name; e++)
    if (strcmp(e->name, name) == 0) return e;
  return NULL;
}

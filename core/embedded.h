/*
 * embedded.h: Lua sources compiled into the binary (core/lua/ *.lua).
 *
 * Parts of the sb module are easier to write in Lua than in C (pretty printing, the
 * REPL's completion tables). core/embed.cmake turns each file into one entry here so
 * an installed engine does not depend on where its source tree was.
 */
#ifndef SB_EMBEDDED_H
#define SB_EMBEDDED_H

#include <stddef.h>

typedef struct sb_embedded {
  const char *name;     /* module name: file name without .lua */
  const char *chunkname; /* shown in tracebacks */
  const char *source;
  size_t len;
} sb_embedded_t;

/* Terminated by an entry whose name is NULL. */
extern const sb_embedded_t sb_embedded_lua[];

const sb_embedded_t *sb_embedded_find(const char *name);

#endif

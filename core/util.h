/*
 * util.h: small helpers every subsystem uses: memory that aborts on exhaustion, files,
 * hashing, random bytes, constant-time comparison, paths, clocks.
 *
 * Allocation failure aborts the process (as Redis's zmalloc does): the engine cannot
 * make progress without memory, and checking every small allocation buries the logic.
 * Every function returning memory says who frees it.
 */
#ifndef SB_UTIL_H
#define SB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *sb_xmalloc(size_t n);
void *sb_xcalloc(size_t n, size_t size);
void *sb_xrealloc(void *p, size_t n);
char *sb_xstrdup(const char *s);
/* Formats into a new string; caller frees. */
char *sb_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads a whole file into a NUL-terminated buffer; caller frees. NULL on error. */
char *sb_read_file(const char *path, size_t *len_out, sb_error_t *err);
/* Writes data to path through a temporary file and rename, with the given mode. */
int sb_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                         sb_error_t *err);
/* Creates dir and its missing parents. */
int sb_mkdir_p(const char *path, unsigned mode, sb_error_t *err);
bool sb_path_exists(const char *path);
bool sb_is_dir(const char *path);
/* Joins two path parts with one slash; caller frees. */
char *sb_path_join(const char *a, const char *b);
/* Absolute form of path (it need not exist); caller frees. */
char *sb_path_absolute(const char *path);
/* Directory of the running executable; caller frees. */
char *sb_exe_dir(void);

/* Text as the requests and the HTTP API take it. sb_utf8_char: the length in bytes (1
 * to 4) of the UTF-8 character s starts with (n bytes available), or 0 when it is not
 * one: a NUL (which PostgreSQL's text cannot hold), a stray continuation byte, a
 * truncated, overlong or surrogate sequence, or past U+10FFFF. sb_utf8_length: the characters (code points) of s, or -1
 * when some byte is not part of one. */
size_t sb_utf8_char(const char *s, size_t n);
long sb_utf8_length(const char *s, size_t n);

/* A uuid in its 8-4-4-4-12 hex form, any case, into out (37 bytes) in lower case;
 * false (out untouched) when `in` (len bytes) is not one. */
bool sb_uuid_canonical(const char *in, size_t len, char out[37]);

/* True when word is one of the space-separated words of list ("a b c"). */
bool sb_word_in(const char *list, const char *word);

/* out gets 64 lowercase hex digits and a NUL. */
void sb_sha256_hex(const void *data, size_t len, char out[65]);
/* out gets 2*len hex digits and a NUL. */
void sb_hex_encode(const unsigned char *in, size_t len, char *out);
int sb_random_bytes(void *buf, size_t len, sb_error_t *err);
/* Random URL-safe token of n characters from [A-Za-z0-9]; out must hold n+1. */
int sb_random_token(char *out, size_t n, sb_error_t *err);
/* Constant-time comparison; true when equal. Lengths are compared first (they are
 * not secret). */
bool sb_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int sb_free_tcp_port(sb_error_t *err);
/* True when something accepts connections on 127.0.0.1:port. */
bool sb_tcp_port_in_use(int port);

/* Monotonic clock in nanoseconds and in seconds. */
uint64_t sb_now_ns(void);
double sb_now_s(void);

#endif

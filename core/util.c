/*
 * util.c: memory, files, hashing, randomness and clocks (see util.h).
 */
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n) {
  fprintf(stderr, "solobase: out of memory allocating %zu bytes\n", n);
  abort();
}

void *sb_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *sb_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom(n * size);
  return p;
}

void *sb_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *sb_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = sb_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

char *sb_xasprintf(const char *fmt, ...) {
  va_list ap;
  char *out = NULL;
  va_start(ap, fmt);
  int n = vasprintf(&out, fmt, ap);
  va_end(ap);
  if (n < 0) oom(0);
  return out;
}

char *sb_read_file(const char *path, size_t *len_out, sb_error_t *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    sb_error_set(err, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 8192, len = 0;
  char *buf = sb_xmalloc(cap);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len - 1 == 0) buf = sb_xrealloc(buf, cap *= 2);
  }
  if (ferror(f)) {
    sb_error_set(err, "cannot read %s: %s", path, strerror(errno));
    fclose(f);
    free(buf);
    return NULL;
  }
  fclose(f);
  buf[len] = '\0';
  if (len_out) *len_out = len;
  return buf;
}

int sb_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode,
                         sb_error_t *err) {
  char *tmp = sb_xasprintf("%s.tmp.%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) {
    sb_error_set(err, "cannot create %s: %s", tmp, strerror(errno));
    free(tmp);
    return -1;
  }
  const char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      sb_error_set(err, "cannot write %s: %s", tmp, strerror(errno));
      close(fd);
      unlink(tmp);
      free(tmp);
      return -1;
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
    sb_error_set(err, "cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    free(tmp);
    return -1;
  }
  free(tmp);
  return 0;
}

int sb_mkdir_p(const char *path, unsigned mode, sb_error_t *err) {
  char *copy = sb_xstrdup(path);
  for (char *p = copy + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(copy, (mode_t)mode) != 0 && errno != EEXIST) {
      sb_error_set(err, "cannot create directory %s: %s", copy, strerror(errno));
      free(copy);
      return -1;
    }
    *p = '/';
  }
  int rc = 0;
  if (mkdir(copy, (mode_t)mode) != 0 && errno != EEXIST) {
    sb_error_set(err, "cannot create directory %s: %s", copy, strerror(errno));
    rc = -1;
  }
  free(copy);
  return rc;
}

bool sb_path_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

bool sb_is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

char *sb_path_join(const char *a, const char *b) {
  if (b[0] == '/') return sb_xstrdup(b);
  size_t la = strlen(a);
  return sb_xasprintf("%s%s%s", a, (la && a[la - 1] == '/') ? "" : "/", b);
}

char *sb_path_absolute(const char *path) {
  if (path[0] == '/') return sb_xstrdup(path);
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return sb_xstrdup(path);
  const char *rel = path;
  while (rel[0] == '.' && rel[1] == '/') rel += 2;
  if (strcmp(rel, ".") == 0) return sb_xstrdup(cwd);
  return sb_path_join(cwd, rel);
}

char *sb_exe_dir(void) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return sb_xstrdup(".");
  buf[n] = '\0';
  char *slash = strrchr(buf, '/');
  if (slash) *slash = '\0';
  return sb_xstrdup(buf);
}

void sb_hex_encode(const unsigned char *in, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = '\0';
}

size_t sb_utf8_char(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (n == 0 || u[0] == 0) return 0;
  if (u[0] < 0x80) return 1;
  size_t len;
  unsigned long cp;
  if (u[0] >= 0xc2 && u[0] <= 0xdf) len = 2, cp = u[0] & 0x1f;
  else if ((u[0] & 0xf0) == 0xe0) len = 3, cp = u[0] & 0x0f;
  else if (u[0] >= 0xf0 && u[0] <= 0xf4) len = 4, cp = u[0] & 0x07;
  else return 0; /* a continuation byte, or a lead byte of an overlong or too big form */
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((u[i] & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (u[i] & 0x3f);
  }
  if (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) return 0;
  if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) return 0;
  return len;
}

long sb_utf8_length(const char *s, size_t n) {
  long chars = 0;
  for (size_t i = 0; i < n; chars++) {
    size_t c = sb_utf8_char(s + i, n - i);
    if (c == 0) return -1;
    i += c;
  }
  return chars;
}

bool sb_uuid_canonical(const char *in, size_t len, char out[37]) {
  if (len != 36) return false;
  char tmp[37];
  for (size_t i = 0; i < 36; i++) {
    char c = in[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (c >= 'A' && c <= 'F') {
      c = (char)(c - 'A' + 'a');
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
    tmp[i] = c;
  }
  tmp[36] = '\0';
  memcpy(out, tmp, 37);
  return true;
}

bool sb_word_in(const char *list, const char *word) {
  size_t len = strlen(word);
  for (const char *p = list; *p;) {
    size_t n = strcspn(p, " ");
    if (n == len && strncmp(p, word, n) == 0) return true;
    p += n + (p[n] == ' ');
  }
  return false;
}

void sb_sha256_hex(const void *data, size_t len, char out[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
  sb_hex_encode(md, 32, out);
}

/* The kernel's CSPRNG: no shared state between threads, unlike a user-space DRBG
 * behind a lock that every request thread would contend for. */
int sb_random_bytes(void *buf, size_t len, sb_error_t *err) {
  unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = getrandom(p, len, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      sb_error_set(err, "the random number generator failed: %s", strerror(errno));
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int sb_random_token(char *out, size_t n, sb_error_t *err) {
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  size_t i = 0;
  while (i < n) {
    unsigned char b[64];
    if (sb_random_bytes(b, sizeof b, err) != 0) return -1;
    /* Reject bytes >= 248 so each of the 62 symbols is equally likely. */
    for (size_t j = 0; j < sizeof b && i < n; j++)
      if (b[j] < 248) out[i++] = alphabet[b[j] % 62];
  }
  out[n] = '\0';
  return 0;
}

bool sb_ct_equal(const void *a, size_t alen, const void *b, size_t blen) {
  if (alen != blen) return false;
  return CRYPTO_memcmp(a, b, alen) == 0;
}

int sb_free_tcp_port(sb_error_t *err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    sb_error_set(err, "socket: %s", strerror(errno));
    return -1;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t slen = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &slen) != 0) {
    sb_error_set(err, "cannot find a free port on 127.0.0.1: %s", strerror(errno));
    close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

bool sb_tcp_port_in_use(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool used = bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0;
  close(fd);
  return used;
}

uint64_t sb_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double sb_now_s(void) { return (double)sb_now_ns() / 1e9; }

/*
 * auth.c: tokens, the token cache, users and bcrypt passwords (see auth.h).
 */
#include "auth.h"

#include <crypt.h>
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

/* A valid token is trusted this long without asking the database again; revocations
 * reach the cache sooner through NOTIFY. */
#define AUTH_CACHE_SECONDS 30
#define CACHE_SLOTS 4096 /* a power of two */

typedef struct cached {
  char sha[65];          /* "" for an empty slot */
  sb_principal_t who;
  time_t until;          /* trusted until, min(cache time, token expiry) */
} cached_t;

static cached_t cache[CACHE_SLOTS];
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

static unsigned slot_of(const char *sha) {
  unsigned v = 0;
  for (int i = 0; i < 8; i++) v = v * 16 + (unsigned)(isdigit((unsigned char)sha[i]) ? sha[i] - '0' : sha[i] - 'a' + 10);
  return v & (CACHE_SLOTS - 1);
}

static bool cache_get(const char *sha, sb_principal_t *out) {
  bool hit = false;
  time_t now = time(NULL);
  pthread_mutex_lock(&cache_mu);
  cached_t *c = &cache[slot_of(sha)];
  /* The digest is compared in constant time, even though it is not the secret. */
  if (c->sha[0] && sb_ct_equal(c->sha, 64, sha, 64) && c->until > now) {
    *out = c->who;
    hit = true;
  }
  pthread_mutex_unlock(&cache_mu);
  return hit;
}

static void cache_put(const char *sha, const sb_principal_t *who, time_t until) {
  pthread_mutex_lock(&cache_mu);
  cached_t *c = &cache[slot_of(sha)];
  snprintf(c->sha, sizeof c->sha, "%s", sha);
  c->who = *who;
  c->until = until;
  pthread_mutex_unlock(&cache_mu);
}

void sb_auth_forget(const char *sha) {
  pthread_mutex_lock(&cache_mu);
  if (!sha) {
    memset(cache, 0, sizeof cache);
  } else if (strlen(sha) == 64) {
    cached_t *c = &cache[slot_of(sha)];
    if (strcmp(c->sha, sha) == 0) memset(c, 0, sizeof *c);
  }
  pthread_mutex_unlock(&cache_mu);
}

static void unauthorized(sb_error_t *err, const char *why) {
  sb_error_set(err, "%s", why);
  memcpy(err->sqlstate, "SB401", 6);
}

int sb_auth_check(sb_db_t *db, const char *token, sb_principal_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  if (!token || strncmp(token, "sbt_", 4) != 0 || strlen(token) != SB_TOKEN_LEN) {
    unauthorized(err, "a valid API token is needed (Authorization: Bearer sbt_...)");
    return -1;
  }
  char sha[65];
  sb_sha256_hex(token, SB_TOKEN_LEN, sha);
  return sb_auth_check_digest(db, sha, out, err);
}

int sb_auth_check_digest(sb_db_t *db, const char *sha, sb_principal_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  if (cache_get(sha, out)) return 0;
  const char *p[] = {sha};
  PGresult *res = sb_db_query_prepared(
      db,
      "SELECT t.id, t.user_id, t.scope = 'operator', "
      "extract(epoch FROM least(coalesce(t.expires_at, 'infinity'), "
      "  now() + interval '30 seconds'))::bigint, "
      "coalesce(ceil(extract(epoch FROM t.expires_at))::bigint, 0) "
      "FROM api_tokens t JOIN users u ON u.id = t.user_id "
      "WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL "
      "AND (t.expires_at IS NULL OR t.expires_at > now()) AND u.status = 'active'",
      1, p, err);
  if (!res) return -1;
  if (PQntuples(res) == 0) {
    PQclear(res);
    unauthorized(err, "the API token is unknown, expired or revoked");
    return -1;
  }
  snprintf(out->token_id, sizeof out->token_id, "%s", PQgetvalue(res, 0, 0));
  snprintf(out->user_id, sizeof out->user_id, "%s", PQgetvalue(res, 0, 1));
  out->operator = PQgetvalue(res, 0, 2)[0] == 't';
  out->expires_at = (time_t)atoll(PQgetvalue(res, 0, 4));
  time_t until = (time_t)atoll(PQgetvalue(res, 0, 3));
  PQclear(res);
  snprintf(out->token_sha, sizeof out->token_sha, "%s", sha);
  cache_put(sha, out, until);
  return 0;
}

/* "90d" / "12h" / "30m" to an interval PostgreSQL reads; anything else as it is. */
static void interval_text(const char *in, char *out, size_t len) {
  char *end = NULL;
  long n = strtol(in, &end, 10);
  const char *unit = end && end[0] && !end[1] ? (end[0] == 'd' ? "days" : end[0] == 'h' ? "hours"
                                                 : end[0] == 'm' ? "minutes" : NULL)
                                              : NULL;
  if (unit && end != in) snprintf(out, len, "%ld %s", n, unit);
  else snprintf(out, len, "%s", in);
}

/* Checks a new token's expiry (expires as given, interval as PostgreSQL reads it): 0
 * when now + interval is to come, else -1 with err. An interval of zero or less would
 * make a token that is expired when it is printed. */
static int check_expiry(sb_db_t *db, const char *expires, const char *interval, sb_error_t *err) {
  const char *p[] = {interval};
  PGresult *res = sb_db_query(db, "SELECT now() + $1::interval > now()", 1, p, err);
  if (!res) {
    if (strcmp(err->sqlstate, "22008") == 0 || strcmp(err->sqlstate, "22015") == 0)
      sb_error_set(err, "expires '%s' is out of range", expires);
    else if (strcmp(err->sqlstate, "22007") == 0 || strcmp(err->sqlstate, "22P02") == 0)
      sb_error_set(err, "expires '%s' is not an interval (say 90d, 12h or '30 days')", expires);
    return -1;
  }
  bool future = PQgetvalue(res, 0, 0)[0] == 't';
  PQclear(res);
  if (!future) {
    sb_error_set(err, "expires '%s' must be a time to come (say 90d, 12h or '30 days')", expires);
    return -1;
  }
  return 0;
}

int sb_token_create(sb_db_t *db, const char *email, const char *scope, const char *name,
                    const char *expires, char *token_out, char *id_out, sb_error_t *err) {
  if (strcmp(scope, "operator") != 0 && strcmp(scope, "customer") != 0) {
    sb_error_set(err, "scope must be operator or customer, not '%s'", scope);
    return -1;
  }
  char interval[64] = "";
  if (expires) {
    interval_text(expires, interval, sizeof interval);
    if (check_expiry(db, expires, interval, err) != 0) return -1;
  }
  char secret[41];
  if (sb_random_token(secret, 40, err) != 0) return -1;
  char token[SB_TOKEN_LEN + 1], sha[65], prefix[16];
  snprintf(token, sizeof token, "sbt_%s", secret);
  explicit_bzero(secret, sizeof secret);
  sb_sha256_hex(token, SB_TOKEN_LEN, sha);
  snprintf(prefix, sizeof prefix, "%.10s", token);
  const char *p[] = {email, scope, name, sha, prefix, expires ? interval : NULL};
  PGresult *res = sb_db_query(
      db,
      "INSERT INTO api_tokens (user_id, scope, name, token_sha256, prefix, expires_at) "
      "SELECT u.id, $2, $3, $4, $5, now() + $6::interval FROM users u "
      "WHERE lower(u.email) = lower($1) AND u.status = 'active' "
      "AND ($2 = 'customer' OR u.role = 'operator') RETURNING id",
      6, p, err);
  if (!res) {
    explicit_bzero(token, sizeof token);
    return -1;
  }
  if (PQntuples(res) == 0) {
    PQclear(res);
    explicit_bzero(token, sizeof token);
    sb_error_set(err, "no active user %s%s", email,
                 strcmp(scope, "operator") == 0 ? " with the operator role" : "");
    return -1;
  }
  if (id_out) snprintf(id_out, 37, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  memcpy(token_out, token, sizeof token);
  explicit_bzero(token, sizeof token);
  return 0;
}

int sb_token_revoke(sb_db_t *db, const char *id, sb_error_t *err) {
  const char *p[] = {id};
  PGresult *res = sb_db_query(db,
                              "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) "
                              "WHERE id::text = $1 OR prefix = $1 RETURNING id",
                              1, p, err);
  if (!res) return -1;
  int n = PQntuples(res);
  PQclear(res);
  if (n == 0) {
    sb_error_set(err, "no token %s", id);
    return -1;
  }
  if (n > 1) {
    sb_error_set(err, "'%s' names %d tokens; give the token id", id, n);
    return -1;
  }
  return 0;
}

int sb_password_hash(const char *password, char *out, sb_error_t *err) {
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (!crypt_gensalt_rn("$2b$", 12, NULL, 0, salt, sizeof salt)) {
    sb_error_set(err, "cannot make a bcrypt salt");
    return -1;
  }
  struct crypt_data *data = sb_xcalloc(1, sizeof *data);
  const char *h = crypt_r(password, salt, data);
  int rc = 0;
  if (!h || h[0] == '*') {
    sb_error_set(err, "bcrypt failed");
    rc = -1;
  } else {
    snprintf(out, 128, "%s", h);
  }
  explicit_bzero(data, sizeof *data);
  free(data);
  return rc;
}

bool sb_password_verify(const char *password, const char *hash) {
  struct crypt_data *data = sb_xcalloc(1, sizeof *data);
  const char *h = crypt_r(password, hash, data);
  bool ok = h && h[0] != '*' && sb_ct_equal(h, strlen(h), hash, strlen(hash));
  explicit_bzero(data, sizeof *data);
  free(data);
  return ok;
}

int sb_user_create(sb_db_t *db, const char *email, const char *name, const char *role,
                   const char *password, char *id_out, sb_error_t *err) {
  char hash[128] = "";
  if (password && sb_password_hash(password, hash, err) != 0) return -1;
  const char *p[] = {email, name, role ? role : "customer", password ? hash : NULL};
  PGresult *res = sb_db_query(db,
                              "INSERT INTO users (email, name, role, password_hash) "
                              "VALUES ($1, $2, $3, $4) RETURNING id",
                              4, p, err);
  explicit_bzero(hash, sizeof hash);
  if (!res) {
    if (strcmp(err->sqlstate, "23505") == 0) sb_error_set(err, "a user %s exists already", email);
    else if (strcmp(err->sqlstate, "23514") == 0)
      sb_error_set(err, "email must be an address and role customer or operator");
    return -1;
  }
  snprintf(id_out, 37, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  return 0;
}

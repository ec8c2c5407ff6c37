/*
 * auth.h: who a request is: API tokens, users and their passwords.
 *
 * A token is "sbt_" and 40 random letters and digits; the database keeps only its
 * SHA-256 (api_tokens.token_sha256). Checking a token hashes it and looks the digest up:
 * in a small in-process cache first (valid tokens, for at most AUTH_CACHE_SECONDS, and
 * dropped at once when a NOTIFY on sb_tokens says a token was revoked or changed), then
 * in the database. Digests are compared in constant time. Passwords are bcrypt ($2b$,
 * libcrypt) and never leave this file in the clear.
 */
#ifndef SB_AUTH_H
#define SB_AUTH_H

#include <stdbool.h>
#include <time.h>

#include "db.h"
#include "error.h"

#define SB_TOKEN_LEN 44 /* "sbt_" + 40 */

typedef struct sb_principal {
  char user_id[37];
  char token_id[37];
  bool operator; /* scope operator: every user's data */
  time_t expires_at; /* when the token expires (epoch seconds, rounded up); 0: never */
  char token_sha[65]; /* the token's SHA-256 hex: how a changed token is recognised */
} sb_principal_t;

/* Checks a bearer token. 0 with *out filled, or -1 with err (sqlstate "SB401" for a
 * token that is unknown, expired or revoked; a database error otherwise). */
int sb_auth_check(sb_db_t *db, const char *token, sb_principal_t *out, sb_error_t *err);
/* The same for a token known by its SHA-256 hex (an open websocket rechecking its token
 * after a NOTIFY on sb_tokens). */
int sb_auth_check_digest(sb_db_t *db, const char *sha256_hex, sb_principal_t *out, sb_error_t *err);
/* Forgets a cached token by its SHA-256 hex (on NOTIFY sb_tokens); NULL forgets all. */
void sb_auth_forget(const char *sha256_hex);

/* Creates a token for the user with this email; token_out (SB_TOKEN_LEN + 1) gets the
 * token, shown once; id_out (37 bytes, may be NULL) its id. scope "operator" needs a user
 * with role operator. expires: a positive interval ("90d", "12h", "30m", "30 days"; zero
 * or less is refused) or NULL for none. */
int sb_token_create(sb_db_t *db, const char *email, const char *scope, const char *name,
                    const char *expires, char *token_out, char *id_out, sb_error_t *err);
int sb_token_revoke(sb_db_t *db, const char *id, sb_error_t *err);

/* bcrypt ($2b$, cost 12) of password into out (128 bytes). */
int sb_password_hash(const char *password, char *out, sb_error_t *err);
bool sb_password_verify(const char *password, const char *hash);
/* Creates a user; password may be NULL (token-only account). id_out: 37 bytes. */
int sb_user_create(sb_db_t *db, const char *email, const char *name, const char *role,
                   const char *password, char *id_out, sb_error_t *err);

#endif

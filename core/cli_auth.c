/*
 * cli_auth.c: `solobase user create|list` and `solobase token create|revoke|list`.
 *
 * A token is printed once, when it is made; afterwards only its prefix is shown.
 * Passwords are read from stdin (--password-stdin), never from the command line, where
 * `ps` would show them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "cli.h"
#include "config.h"
#include "mgmtdb.h"
#include "util.h"

static int user_create(int argc, char **argv) {
  static const struct option opts[] = {
      {"email", required_argument, NULL, 'e'}, {"name", required_argument, NULL, 'n'},
      {"role", required_argument, NULL, 'r'},  {"password-stdin", no_argument, NULL, 'p'},
      {"help", no_argument, NULL, 'h'},        {0, 0, 0, 0}};
  const char *email = NULL, *name = NULL, *role = "customer";
  bool with_password = false;
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+e:n:r:ph", opts, NULL)) != -1) {
    switch (c) {
    case 'e': email = optarg; break;
    case 'n': name = optarg; break;
    case 'r': role = optarg; break;
    case 'p': with_password = true; break;
    case 'h':
      fputs("usage: solobase user create --email EMAIL [--name NAME] [--role customer|operator]\n"
            "                            [--password-stdin]\n\n"
            "Creates a user. With --password-stdin the first line of stdin is the password,\n"
            "stored as a bcrypt ($2b$) hash; without it the user signs in with tokens only.\n",
            stdout);
      return SB_EXIT_OK;
    default: return sb_cli_usage_error("user create", "bad option");
    }
  }
  if (!email) return sb_cli_usage_error("user create", "--email is required");
  char password[1024] = "";
  if (with_password) {
    if (!fgets(password, sizeof password, stdin)) return sb_cli_fail("no password on stdin");
    password[strcspn(password, "\r\n")] = '\0';
    if (strlen(password) < 12) {
      explicit_bzero(password, sizeof password);
      return sb_cli_fail("the password must have at least 12 characters");
    }
  }
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase user", &err);
  if (!db) return sb_cli_fail_err(&err);
  char id[37];
  int rc = sb_user_create(db, email, name, role, with_password ? password : NULL, id, &err);
  explicit_bzero(password, sizeof password);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  printf("%s\n", id);
  return SB_EXIT_OK;
}

/* Prints the rows of a query as aligned columns. */
static int print_query(const char *sql, int n, const char *const *params) {
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase", &err);
  if (!db) return sb_cli_fail_err(&err);
  PGresult *res = sb_db_query(db, sql, n, params, &err);
  sb_db_free(db);
  if (!res) return sb_cli_fail_err(&err);
  int cols = PQnfields(res), rows = PQntuples(res);
  int width[32] = {0};
  for (int c = 0; c < cols && c < 32; c++) {
    width[c] = (int)strlen(PQfname(res, c));
    for (int r = 0; r < rows; r++)
      if ((int)strlen(PQgetvalue(res, r, c)) > width[c]) width[c] = (int)strlen(PQgetvalue(res, r, c));
  }
  for (int c = 0; c < cols && c < 32; c++) printf("%-*s%s", width[c], PQfname(res, c), c + 1 < cols ? "  " : "\n");
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols && c < 32; c++)
      printf("%-*s%s", width[c], PQgetvalue(res, r, c), c + 1 < cols ? "  " : "\n");
  PQclear(res);
  return SB_EXIT_OK;
}

static int user_list(int argc, char **argv) {
  if (sb_cli_wants_help(argc, argv)) {
    fputs("usage: solobase user list\n\nLists users.\n", stdout);
    return SB_EXIT_OK;
  }
  return print_query("SELECT id, email, role, status, created_at::date AS created FROM users "
                     "ORDER BY created_at", 0, NULL);
}

static int token_create(int argc, char **argv) {
  static const struct option opts[] = {
      {"user", required_argument, NULL, 'u'},    {"scope", required_argument, NULL, 's'},
      {"name", required_argument, NULL, 'n'},    {"expires", required_argument, NULL, 'x'},
      {"help", no_argument, NULL, 'h'},          {0, 0, 0, 0}};
  const char *user = NULL, *scope = "customer", *name = NULL, *expires = NULL;
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+u:s:n:x:h", opts, NULL)) != -1) {
    switch (c) {
    case 'u': user = optarg; break;
    case 's': scope = optarg; break;
    case 'n': name = optarg; break;
    case 'x': expires = optarg; break;
    case 'h':
      fputs("usage: solobase token create --user EMAIL [--scope customer|operator] [--name NAME]\n"
            "                             [--expires 90d]\n\n"
            "Creates an API token and prints it (once: only its SHA-256 is stored). operator\n"
            "tokens are for users with the operator role. --expires is a time to come (90d,\n"
            "12h, 30m or '30 days'; zero or less is refused); without it the token never\n"
            "expires.\n",
            stdout);
      return SB_EXIT_OK;
    default: return sb_cli_usage_error("token create", "bad option");
    }
  }
  if (!user) return sb_cli_usage_error("token create", "--user is required");
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase token", &err);
  if (!db) return sb_cli_fail_err(&err);
  char token[SB_TOKEN_LEN + 1], id[37];
  int rc = sb_token_create(db, user, scope, name, expires, token, id, &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  printf("%s\n", token);
  fprintf(stderr, "token %s for %s (%s); it is shown only now\n", id, user, scope);
  explicit_bzero(token, sizeof token);
  return SB_EXIT_OK;
}

static int token_revoke(int argc, char **argv) {
  if (sb_cli_wants_help(argc, argv)) {
    fputs("usage: solobase token revoke ID\n\nRevokes a token (by id, or by its prefix). Every "
          "engine stops accepting it at once.\n",
          stdout);
    return SB_EXIT_OK;
  }
  if (argc != 2) return sb_cli_usage_error("token revoke", "which token?");
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase token", &err);
  if (!db) return sb_cli_fail_err(&err);
  int rc = sb_token_revoke(db, argv[1], &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  printf("revoked\n");
  return SB_EXIT_OK;
}

static int token_list(int argc, char **argv) {
  if (sb_cli_wants_help(argc, argv)) {
    fputs("usage: solobase token list [EMAIL]\n\nLists tokens (never the tokens themselves).\n",
          stdout);
    return SB_EXIT_OK;
  }
  const char *p[] = {argc > 1 ? argv[1] : NULL};
  return print_query("SELECT t.id, t.prefix || '...' AS token, u.email, t.scope, t.name, "
                     "t.expires_at::date AS expires, CASE WHEN t.revoked_at IS NOT NULL THEN "
                     "'revoked' WHEN t.expires_at < now() THEN 'expired' ELSE 'valid' END AS state "
                     "FROM api_tokens t JOIN users u ON u.id = t.user_id "
                     "WHERE $1::text IS NULL OR lower(u.email) = lower($1) ORDER BY t.created_at",
                     1, p);
}

static const sb_cli_command_t user_commands[] = {
    {"create", user_create, "create a user"},
    {"list", user_list, "list users"},
    {NULL, NULL, NULL},
};

static const sb_cli_command_t token_commands[] = {
    {"create", token_create, "create an API token (printed once)"},
    {"revoke", token_revoke, "revoke an API token"},
    {"list", token_list, "list API tokens"},
    {NULL, NULL, NULL},
};

int sb_cmd_user(int argc, char **argv) {
  return sb_cli_dispatch("user", user_commands, "usage: solobase user COMMAND\n\nUsers.\n", argc,
                         argv);
}

int sb_cmd_token(int argc, char **argv) {
  return sb_cli_dispatch("token", token_commands,
                         "usage: solobase token COMMAND\n\nAPI tokens (docs/http-api.md).\n", argc,
                         argv);
}

/*
 * cli.h: what the command-line front end shares between command files.
 *
 * Each `solobase COMMAND` is a function taking the arguments after the command name
 * (argv[0] is the command). Commands print results on stdout; failures are one line
 * `solobase: reason` on stderr and exit status 1 (2 for a usage error).
 */
#ifndef SB_CLI_H
#define SB_CLI_H

#include "error.h"

typedef int (*sb_cli_fn)(int argc, char **argv);

typedef struct sb_cli_command {
  const char *name;
  sb_cli_fn fn;
  const char *summary;
} sb_cli_command_t;

#define SB_EXIT_OK 0
#define SB_EXIT_FAIL 1
#define SB_EXIT_USAGE 2

/* Prints "solobase: message" on stderr; returns SB_EXIT_FAIL. */
int sb_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int sb_cli_fail_err(const sb_error_t *err);
/* Prints "solobase: message" and a pointer to --help; returns SB_EXIT_USAGE. */
int sb_cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* After getopt_long returned '?' or ':': names the offending option in one usage line
 * and returns SB_EXIT_USAGE. */
int sb_cli_bad_option(const char *command, char **argv);
/* True for -h or --help anywhere before "--". */
int sb_cli_wants_help(int argc, char **argv);
/* Runs the subcommand of a command group (argv[1]) from table. */
int sb_cli_dispatch(const char *group, const sb_cli_command_t *table, const char *usage,
                    int argc, char **argv);

int sb_cmd_db(int argc, char **argv);
int sb_cmd_config(int argc, char **argv);
int sb_cmd_policy(int argc, char **argv);
int sb_cmd_run(int argc, char **argv);
int sb_cmd_serve(int argc, char **argv);
int sb_cmd_up(int argc, char **argv);
int sb_cmd_user(int argc, char **argv);
int sb_cmd_token(int argc, char **argv);
int sb_cmd_repl(int argc, char **argv);

#endif

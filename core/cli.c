/*
 * cli.c: error reporting and subcommand dispatch for the command line (see cli.h).
 */
#include "cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int sb_cli_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("solobase: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return SB_EXIT_FAIL;
}

int sb_cli_fail_err(const sb_error_t *err) {
  return sb_cli_fail("%s", err->msg[0] ? err->msg : "failed");
}

int sb_cli_usage_error(const char *command, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("solobase: ", stderr);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see `solobase %s%s--help`)\n", command, *command ? " " : "");
  va_end(ap);
  return SB_EXIT_USAGE;
}

int sb_cli_bad_option(const char *command, char **argv) {
  /* opterr is 0 (main), so getopt printed nothing: name the option here, once. */
  const char *arg = optind > 0 ? argv[optind - 1] : "";
  if (strncmp(arg, "--", 2) != 0 && optopt > ' ' && optopt < 127)
    return sb_cli_usage_error(command, "bad or incomplete option '-%c'", optopt);
  return sb_cli_usage_error(command, "bad or incomplete option '%s'", arg);
}

int sb_cli_wants_help(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) return 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) return 1;
  }
  return 0;
}

int sb_cli_dispatch(const char *group, const sb_cli_command_t *table, const char *usage,
                    int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
      strcmp(argv[1], "help") == 0) {
    fputs(usage, stdout);
    fputs("\nCommands:\n", stdout);
    for (const sb_cli_command_t *c = table; c->name; c++)
      printf("  %-10s %s\n", c->name, c->summary);
    printf("\nRun `solobase %s COMMAND --help` for a command's options.\n", group);
    return argc < 2 ? SB_EXIT_USAGE : SB_EXIT_OK;
  }
  for (const sb_cli_command_t *c = table; c->name; c++)
    if (strcmp(argv[1], c->name) == 0) return c->fn(argc - 1, argv + 1);
  return sb_cli_usage_error(group, "unknown command '%s %s'", group, argv[1]);
}

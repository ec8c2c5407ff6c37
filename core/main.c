/*
 * main.c: the `solobase` command line: global options, settings, then one command.
 *
 * Kept small on purpose (as lua.c is): everything a command does lives in its own file.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "util.h"

static int cmd_version(int argc, char **argv) {
  printf("solobase %s\n", SB_VERSION);
  return SB_EXIT_OK;
}

static const sb_cli_command_t commands[] = {
    {"up", sb_cmd_up, "init, migrate and seed the management database, then serve"},
    {"serve", sb_cmd_serve, "run the engine: workers, scheduler, policies, HTTP/websockets"},
    {"db", sb_cmd_db, "management database: init, migrate, seed, status, start, stop, url"},
    {"policy", sb_cmd_policy, "policies: check, eval, explain"},
    {"run", sb_cmd_run, "run a Lua script with the sb API"},
    {"repl", sb_cmd_repl, "interactive Lua with the sb API"},
    {"user", sb_cmd_user, "users: create, list"},
    {"token", sb_cmd_token, "API tokens: create, revoke, list"},
    {"config", sb_cmd_config, "print the effective settings"},
    {"version", cmd_version, "print the version"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out) {
  fputs("usage: solobase [OPTIONS] COMMAND [ARGS]\n\n"
        "Solobase Cloud control plane.\n\n"
        "Options:\n"
        "  -c, --config FILE     load settings from FILE (Lua: name = value)\n"
        "  -D, --data-dir DIR    directory the engine owns (default ./var)\n"
        "  -s, --set NAME=VALUE  override one setting (repeatable)\n"
        "  -v, --verbose         log debug messages\n"
        "  -q, --quiet           log warnings and errors only\n"
        "  -V, --version         print the version\n"
        "  -h, --help            print this help\n\n"
        "Commands:\n",
        out);
  for (const sb_cli_command_t *c = commands; c->name; c++)
    fprintf(out, "  %-10s %s\n", c->name, c->summary);
  fputs("\nRun `solobase COMMAND --help` for a command's options. Settings: `solobase config`.\n",
        out);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  opterr = 0; /* every command reports a bad option itself, in one line */
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'}, {"data-dir", required_argument, NULL, 'D'},
      {"set", required_argument, NULL, 's'},    {"verbose", no_argument, NULL, 'v'},
      {"quiet", no_argument, NULL, 'q'},        {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},         {0, 0, 0, 0},
  };
  const char *config_file = NULL, *data_dir = NULL, *level = NULL;
  const char *sets[64];
  int nsets = 0, c;
  while ((c = getopt_long(argc, argv, "+c:D:s:vqVh", opts, NULL)) != -1) {
    switch (c) {
    case 'c': config_file = optarg; break;
    case 'D': data_dir = optarg; break;
    case 's':
      if (nsets == (int)SB_ARRAY_LEN(sets)) return sb_cli_fail("too many --set options");
      sets[nsets++] = optarg;
      break;
    case 'v': level = "debug"; break;
    case 'q': level = "warn"; break;
    case 'V': return cmd_version(0, NULL);
    case 'h': usage(stdout); return SB_EXIT_OK;
    default: return sb_cli_bad_option("", argv);
    }
  }
  if (optind >= argc) {
    usage(stderr);
    return SB_EXIT_USAGE;
  }

  sb_error_t err;
  if (sb_config_load(config_file, &err) != 0) return sb_cli_fail_err(&err);
  if (data_dir && sb_config_set("data_dir", data_dir, &err) != 0) return sb_cli_fail_err(&err);
  if (level && sb_config_set("log_level", level, &err) != 0) return sb_cli_fail_err(&err);
  for (int i = 0; i < nsets; i++) {
    char *name = sb_xstrdup(sets[i]);
    char *eq = strchr(name, '=');
    if (!eq) {
      free(name);
      return sb_cli_fail("--set wants NAME=VALUE, got '%s'", sets[i]);
    }
    *eq = '\0';
    int rc = sb_config_set(name, eq + 1, &err);
    free(name);
    if (rc != 0) return sb_cli_fail_err(&err);
  }
  if (sb_config_finish(&err) != 0) return sb_cli_fail_err(&err);

  const char *name = argv[optind];
  int rc = -1;
  for (const sb_cli_command_t *cmd = commands; cmd->name; cmd++)
    if (strcmp(name, cmd->name) == 0) rc = cmd->fn(argc - optind, argv + optind);
  if (rc < 0) {
    fprintf(stderr, "solobase: unknown command '%s'\n\n", name);
    usage(stderr);
    rc = SB_EXIT_USAGE;
  }
  sb_config_free();
  return rc;
}

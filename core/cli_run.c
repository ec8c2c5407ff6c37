/*
 * cli_run.c: `solobase run [--dry-run] FILE [ARGS]`: an operator script with the full
 * sb API (docs/lua-api.md).
 *
 * FILE is a path, or the name of a script in scripts/ (with or without .lua). ARGS are
 * in the global `arg` table (arg[0] is the file) and are also passed to the chunk as
 * `...`. An error prints file:line and a traceback and exits 1. --dry-run runs the
 * whole script in one transaction that is rolled back at the end.
 */
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "script.h"
#include "util.h"

/* FILE as given if it exists, else scripts/FILE[.lua]. Caller frees. */
static char *resolve_script(const char *file) {
  if (sb_path_exists(file)) return sb_xstrdup(file);
  char *p = sb_path_join(sb_config()->scripts_dir, file);
  if (sb_path_exists(p)) return p;
  free(p);
  p = sb_xasprintf("%s/%s.lua", sb_config()->scripts_dir, file);
  if (sb_path_exists(p)) return p;
  free(p);
  return NULL;
}

int sb_cmd_run(int argc, char **argv) {
  static const struct option opts[] = {
      {"dry-run", no_argument, NULL, 'n'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  bool dry_run = false;
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+nh", opts, NULL)) != -1) {
    if (c == 'n') dry_run = true;
    else if (c == 'h') {
      fputs("usage: solobase run [--dry-run] FILE [ARGS...]\n\n"
            "Runs a Lua script with the full sb API (docs/lua-api.md). FILE is a path or\n"
            "the name of a script in scripts/. ARGS are in the `arg` table.\n\n"
            "  -n, --dry-run   run everything in one transaction, rolled back at the end\n",
            stdout);
      return SB_EXIT_OK;
    } else {
      return sb_cli_bad_option("run", argv);
    }
  }
  if (optind >= argc) return sb_cli_usage_error("run", "which script?");
  char *path = resolve_script(argv[optind]);
  if (!path) return sb_cli_fail("no script %s (nor in %s)", argv[optind], sb_config()->scripts_dir);
  sb_error_t err;
  char *copy = sb_xstrdup(path);
  sb_script_t *s = sb_script_new(basename(copy), dry_run, &err);
  free(copy);
  if (!s) {
    free(path);
    return sb_cli_fail_err(&err);
  }
  int rc = sb_script_run_file(s, path, argc - optind - 1, argv + optind + 1, &err);
  sb_script_free(s);
  free(path);
  if (rc != 0) return sb_cli_fail_err(&err);
  return SB_EXIT_OK;
}

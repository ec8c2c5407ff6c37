/*
 * cli_policy.c: `solobase policy check|eval|explain`.
 *
 * check validates every file of a policies directory as a reload would (compiles,
 * contract functions present, examples pass) and exits 1 naming file:line of each
 * broken one. eval runs one function on a JSON input and prints the answer with the
 * version's sha256, as `opa eval` does. explain prints the decisions that caused an
 * event: which policy version, which input, which output.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "mgmtdb.h"
#include "policy.h"
#include "util.h"

static sb_policy_limits_t limits(void) {
  sb_policy_limits_t l = {sb_config()->policy_instruction_budget,
                          (size_t)sb_config()->policy_memory_limit_mb << 20};
  return l;
}

/* --help for commands without other options; -1 to go on, else the exit status. */
static int help_only(int argc, char **argv, const char *help, int min_args, int max_args) {
  static const struct option opts[] = {{"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
  optind = 0;
  int c;
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    if (c == 'h') {
      fputs(help, stdout);
      return SB_EXIT_OK;
    }
    char cmd[64];
    snprintf(cmd, sizeof cmd, "policy %s", argv[0]);
    return sb_cli_bad_option(cmd, argv);
  }
  int n = argc - optind;
  if (n < min_args || n > max_args)
    return sb_cli_usage_error("policy", "`policy %s` takes %d to %d arguments", argv[0],
                              min_args, max_args);
  return -1;
}

static int policy_check(int argc, char **argv) {
  int r = help_only(argc, argv,
                    "usage: solobase policy check [DIR]\n\n"
                    "Compiles and validates every policy in DIR (default: the policies_dir\n"
                    "setting) as a reload would: the functions each contract requires exist\n"
                    "and every example gives its expected answer within the limits. Exits 1\n"
                    "and names file:line for each broken policy.\n",
                    0, 1);
  if (r >= 0) return r;
  const char *dir = optind < argc ? argv[optind] : sb_config()->policies_dir;
  sb_policy_report_t rep;
  sb_policy_limits_t l = limits();
  sb_error_t err;
  int broken = sb_policy_check_dir(dir, &l, &rep, &err);
  if (broken < 0) return sb_cli_fail_err(&err);
  for (int i = 0; i < rep.n; i++) {
    const sb_policy_result_t *p = &rep.items[i];
    if (p->outcome == SB_POLICY_REFUSED) fprintf(stderr, "solobase: %s\n", p->error);
    else printf("ok  %-14s sha256 %.12s\n", p->name, p->sha256);
  }
  printf("%d polic%s checked, %d broken (%.1f ms)\n", rep.n, rep.n == 1 ? "y" : "ies", broken,
         rep.duration_ms);
  return broken ? SB_EXIT_FAIL : SB_EXIT_OK;
}

static int policy_eval(int argc, char **argv) {
  int r = help_only(argc, argv,
                    "usage: solobase policy eval NAME FUNCTION JSON\n\n"
                    "Runs FUNCTION of policies/NAME.lua on the JSON input under the sandbox,\n"
                    "limits and contract, and prints {\"answer\": ..., \"sha256\": ...}.\n"
                    "Example: solobase policy eval quotas check '{\"quotas\":{\"storage_gb\":1,\n"
                    "  \"api_requests_daily\":10000},\"usage\":{\"storage_bytes\":0,\n"
                    "  \"api_requests_today\":9500}}'\n",
                    3, 3);
  if (r >= 0) return r;
  sb_policy_limits_t l = limits();
  sb_policy_registry_t *reg = sb_policy_registry_new(sb_config()->policies_dir, &l);
  sb_policy_report_t rep;
  sb_error_t err;
  sb_policy_engine_t *eng = NULL;
  char *out = NULL;
  int rc = SB_EXIT_FAIL;
  if (sb_policy_registry_reload(reg, &rep, &err) != 0) goto done;
  if (!(eng = sb_policy_engine_new(reg, &err))) goto done;
  sb_policy_call_t call = {.policy = argv[optind], .fn = argv[optind + 1]};
  if (sb_policy_call_json(eng, &call, argv[optind + 2], &out, &err) != 0) goto done;
  printf("{\"answer\": %s, \"policy\": \"%s\", \"function\": \"%s\", \"sha256\": \"%s\", "
         "\"duration_us\": %llu}\n",
         out, call.policy, call.fn, call.sha256, (unsigned long long)(call.duration_ns / 1000));
  rc = SB_EXIT_OK;
done:
  if (rc != SB_EXIT_OK) sb_cli_fail_err(&err);
  free(out);
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
  return rc;
}

static int policy_explain(int argc, char **argv) {
  int r = help_only(argc, argv,
                    "usage: solobase policy explain EVENT\n\n"
                    "Prints the policy decisions that caused an event (its uuid or its stream\n"
                    "number): policy, function, version sha256, input and output.\n",
                    1, 1);
  if (r >= 0) return r;
  const char *id = argv[optind];
  sb_error_t err;
  sb_db_t *db = sb_mgmtdb_connect("solobase policy explain", &err);
  if (!db) return sb_cli_fail_err(&err);
  const char *params[] = {id};
  PGresult *ev = sb_db_query(db,
                             "SELECT id, seq, event_type, coalesce(description, ''), "
                             "created_at, coalesce(instance_id::text, '') FROM instance_events "
                             "WHERE id::text = $1 OR seq::text = $1",
                             1, params, &err);
  if (!ev) {
    sb_db_free(db);
    return sb_cli_fail_err(&err);
  }
  if (PQntuples(ev) == 0) {
    PQclear(ev);
    sb_db_free(db);
    return sb_cli_fail("no event %s", id);
  }
  printf("event %s (#%s) %s at %s%s%s\n  %s\n", PQgetvalue(ev, 0, 0), PQgetvalue(ev, 0, 1),
         PQgetvalue(ev, 0, 2), PQgetvalue(ev, 0, 4), *PQgetvalue(ev, 0, 5) ? " instance " : "",
         PQgetvalue(ev, 0, 5), PQgetvalue(ev, 0, 3));
  const char *eid[] = {PQgetvalue(ev, 0, 0)};
  PGresult *res = sb_db_query(db,
                              "SELECT d.policy, d.function, d.version_sha256, d.created_at, "
                              "coalesce(d.duration_us, 0), jsonb_pretty(d.input), "
                              "jsonb_pretty(d.output), v.first_seen_at "
                              "FROM policy_decisions d LEFT JOIN policy_versions v "
                              "ON v.name = d.policy AND v.sha256 = d.version_sha256 "
                              "WHERE d.event_id = $1 ORDER BY d.created_at",
                              1, eid, &err);
  PQclear(ev);
  sb_db_free(db);
  if (!res) return sb_cli_fail_err(&err);
  if (PQntuples(res) == 0) printf("no policy decision is linked to this event\n");
  for (int i = 0; i < PQntuples(res); i++) {
    printf("\ndecision: %s.%s at %s (%s us)\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
           PQgetvalue(res, i, 3), PQgetvalue(res, i, 4));
    printf("version:  policies/%s.lua sha256 %s (%s%s)\n", PQgetvalue(res, i, 0),
           PQgetvalue(res, i, 2), PQgetisnull(res, i, 7) ? "source not on record" : "first loaded ",
           PQgetvalue(res, i, 7));
    printf("input:\n%s\noutput:\n%s\n", PQgetvalue(res, i, 5), PQgetvalue(res, i, 6));
  }
  PQclear(res);
  return SB_EXIT_OK;
}

static const sb_cli_command_t policy_commands[] = {
    {"check", policy_check, "compile and validate every policy (exit 1 on a broken one)"},
    {"eval", policy_eval, "run one policy function on a JSON input"},
    {"explain", policy_explain, "show the decisions behind an event"},
    {NULL, NULL, NULL},
};

int sb_cmd_policy(int argc, char **argv) {
  return sb_cli_dispatch("policy", policy_commands,
                         "usage: solobase policy COMMAND\n\n"
                         "The Lua policies in policies/ (docs/policies.md).\n",
                         argc, argv);
}

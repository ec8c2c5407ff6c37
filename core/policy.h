/*
 * policy.h: Lua policies: loading, sandboxing, limits, validation and hot reload.
 *
 * Policies decide, the core acts. A policy is a file policies/NAME.lua returning a
 * table of pure functions plus `examples`. Two objects hold them:
 *
 *   sb_policy_registry_t  one per process: the current version (source, sha256) of each
 *                         policy, a generation number bumped at every accepted reload,
 *                         and the listener told about loads and refusals.
 *   sb_policy_engine_t    one per thread: a sandboxed lua_State holding compiled copies
 *                         of the current versions. Before each call it compares its
 *                         generation with the registry's (one atomic load) and, when
 *                         they differ, recompiles what changed. A call in progress
 *                         always finishes on the version it started with.
 *
 * A reload compiles and validates each changed file in a scratch engine first (the
 * functions its contract requires exist, its examples give their expected outputs
 * under the contract); only then is it swapped in. A broken file is refused with
 * file:line and the previous version keeps serving.
 *
 * Sandbox: policies see only safe base functions and the string, table, math and utf8
 * libraries, plus os.time/date/clock; no io, load, require, debug, coroutine or global
 * writes (and reading an undefined global is an error). Limits: every call runs under
 * an instruction budget (a count hook) and every engine's state under a memory cap (its
 * allocator); both come from the settings. Breaking either, raising an error, or
 * answering outside the contract ends the call with an error naming file and line;
 * the engine stays usable.
 */
#ifndef SB_POLICY_H
#define SB_POLICY_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SB_POLICY_MAX 32

typedef struct sb_policy_registry sb_policy_registry_t;
typedef struct sb_policy_engine sb_policy_engine_t;

typedef struct sb_policy_limits {
  long instruction_budget; /* VM instructions per call */
  size_t memory_limit;     /* bytes per engine state */
} sb_policy_limits_t;

/* What happened to one file during a load or reload. */
typedef enum {
  SB_POLICY_LOADED,    /* new or changed, accepted */
  SB_POLICY_UNCHANGED,
  SB_POLICY_REFUSED,   /* broken: the previous version (if any) keeps serving */
  SB_POLICY_REMOVED,   /* file gone: the previous version keeps serving */
} sb_policy_outcome_t;

typedef struct sb_policy_result {
  char name[64];
  char path[512];
  char sha256[65];
  sb_policy_outcome_t outcome;
  char error[1024]; /* REFUSED/REMOVED: why, starting with file:line where known */
} sb_policy_result_t;

typedef struct sb_policy_report {
  sb_policy_result_t items[SB_POLICY_MAX];
  int n;
  int loaded, refused;
  double duration_ms;
} sb_policy_report_t;

/* Called after every load or reload with its report (on the reloading thread). The
 * source of each accepted or refused version is passed so it can be recorded. */
typedef void (*sb_policy_listener_fn)(void *ud, const sb_policy_result_t *r, const char *source);

/* A snapshot of one current version, for `sb.policy.versions()`. */
typedef struct sb_policy_info {
  char name[64];
  char path[512];
  char sha256[65];
  double loaded_at; /* unix seconds */
  uint64_t generation;
} sb_policy_info_t;

sb_policy_registry_t *sb_policy_registry_new(const char *dir, const sb_policy_limits_t *limits);
void sb_policy_registry_free(sb_policy_registry_t *reg);
void sb_policy_registry_set_listener(sb_policy_registry_t *reg, sb_policy_listener_fn fn,
                                     void *ud);
/* Reads dir and loads what is new or changed. The first call must find every policy
 * the core needs, else it fails. Later calls never fail as a whole: broken files are
 * refused in the report. Serialised internally; safe from any thread. */
int sb_policy_registry_reload(sb_policy_registry_t *reg, sb_policy_report_t *report,
                              sb_error_t *err);
int sb_policy_registry_versions(sb_policy_registry_t *reg, sb_policy_info_t *out, int max);
/* A copy of the source of policy name when its current version is sha256, else NULL.
 * Caller frees. */
char *sb_policy_registry_source(sb_policy_registry_t *reg, const char *name, const char *sha256);
const char *sb_policy_registry_dir(const sb_policy_registry_t *reg);
uint64_t sb_policy_registry_generation(sb_policy_registry_t *reg);
/* Validates every file of dir in isolation, without a registry: `solobase policy
 * check`. Returns the number of broken files. */
int sb_policy_check_dir(const char *dir, const sb_policy_limits_t *limits,
                        sb_policy_report_t *report, sb_error_t *err);

sb_policy_engine_t *sb_policy_engine_new(sb_policy_registry_t *reg, sb_error_t *err);
void sb_policy_engine_free(sb_policy_engine_t *eng);

/* One call. sb_policy_begin() syncs versions and returns the engine's state with the
 * stack ready for the caller to push exactly one input value; sb_policy_invoke() runs
 * the function under the limits and validates the answer, leaving it on top of the
 * stack; sb_policy_end() pops everything. end is needed after a successful begin,
 * whatever invoke returned. */
typedef struct sb_policy_call {
  const char *policy;
  const char *fn;
  char sha256[65];    /* version used, filled by begin */
  uint64_t duration_ns; /* filled by invoke */
} sb_policy_call_t;

lua_State *sb_policy_begin(sb_policy_engine_t *eng, sb_policy_call_t *call, sb_error_t *err);
int sb_policy_invoke(sb_policy_engine_t *eng, sb_policy_call_t *call, sb_error_t *err);
void sb_policy_end(sb_policy_engine_t *eng);

/* A call with input and output as JSON text (effects decided in C, `policy eval`,
 * the decision log). *output is malloc'd, caller frees. */
int sb_policy_call_json(sb_policy_engine_t *eng, sb_policy_call_t *call, const char *input,
                        char **output, sb_error_t *err);

/* The hot path of quota enforcement: quotas.check without JSON. */
typedef enum { SB_QUOTA_OK, SB_QUOTA_WARNING, SB_QUOTA_EXCEEDED } sb_quota_status_t;
typedef enum {
  SB_QUOTA_ACTION_NONE, SB_QUOTA_ACTION_NOTIFY, SB_QUOTA_ACTION_THROTTLE,
  SB_QUOTA_ACTION_BLOCK_WRITES
} sb_quota_action_t;
typedef enum { SB_QUOTA_RES_NONE, SB_QUOTA_RES_STORAGE, SB_QUOTA_RES_API } sb_quota_resource_t;

typedef struct sb_quota_input {
  int64_t storage_gb, api_requests_daily;     /* quotas */
  int64_t storage_bytes, api_requests_today;  /* usage */
} sb_quota_input_t;

typedef struct sb_quota_decision {
  sb_quota_status_t status;
  sb_quota_action_t action;
  sb_quota_resource_t resource;
} sb_quota_decision_t;

int sb_policy_quota_check(sb_policy_engine_t *eng, const sb_quota_input_t *in,
                          sb_quota_decision_t *out, sb_error_t *err);

/* Calls made and failed (errors, limits, broken contracts) by the engines of this
 * process (those made with sb_policy_engine_new), for /metrics. */
void sb_policy_counters(unsigned long *calls, unsigned long *failed);

const char *sb_quota_status_name(sb_quota_status_t s);
const char *sb_quota_action_name(sb_quota_action_t a);
const char *sb_quota_resource_name(sb_quota_resource_t r);

#endif

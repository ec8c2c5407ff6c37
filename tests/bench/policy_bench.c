/*
 * policy_bench.c: benchmarks of the policy engine (issue: Lua runtime).
 *
 * 1. Quota decisions through the core: C builds the input, calls quotas.check in the
 *    sandboxed engine under its instruction budget and memory cap, validates the
 *    answer against the contract and reads it back into a C struct. Side by side, in
 *    the same run: the same calls from a pure-Lua loop (plain lua_State, no sandbox, no
 *    hook, no validation), and a bare C->Lua call of an empty function. Reports
 *    decisions/s (median of rounds) and the ratio core/pure-Lua time.
 *    Targets: >= 2,000,000 decisions/s on one core; <= 3x the pure-Lua time.
 * 2. Reload under load: two threads decide flat out while the main thread reloads
 *    quotas.lua 100 times (alternating two valid versions). Reports failed decisions
 *    (target 0), the reload time (compile, validate, publish: target <= 5 ms each,
 *    reported median/p99/max) and how long the deciding threads took to pick up each
 *    new version.
 *
 * Run: build/policy_bench [policies_dir]   (not run by CI; numbers are printed)
 */
#include <lauxlib.h>
#include <lualib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy.h"
#include "util.h"

#define ROUNDS 7
#define CALLS 2000000

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return v[n / 2];
}

static sb_quota_input_t input_for(int i) {
  sb_quota_input_t in = {10, 100000, (int64_t)(i % 1000) * 10737418, (int64_t)(i % 120000)};
  return in;
}

static double bench_core(sb_policy_engine_t *eng) {
  sb_quota_decision_t d;
  sb_error_t err;
  uint64_t t0 = sb_now_ns();
  for (int i = 0; i < CALLS; i++) {
    sb_quota_input_t in = input_for(i);
    if (sb_policy_quota_check(eng, &in, &d, &err) != 0) {
      fprintf(stderr, "decision failed: %s\n", err.msg);
      exit(1);
    }
  }
  return (double)CALLS / ((double)(sb_now_ns() - t0) / 1e9);
}

/* The same decisions from a Lua loop in a plain state. */
static double bench_pure_lua(const char *path) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_gc(L, LUA_GCGEN, 0, 0);
  if (luaL_dofile(L, path) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    exit(1);
  }
  lua_setglobal(L, "quotas");
  char chunk[1024];
  snprintf(chunk, sizeof chunk,
           "local check, n = quotas.check, %d\n"
           "local t0 = os.clock()\n"
           "for i = 0, n - 1 do\n"
           "  local d = check({ quotas = { storage_gb = 10, api_requests_daily = 100000 },\n"
           "    usage = { storage_bytes = (i %% 1000) * 10737418, api_requests_today = i %% 120000 } })\n"
           "  if d.status == nil then error('no status') end\n"
           "end\n"
           "return n / (os.clock() - t0)",
           CALLS);
  if (luaL_dostring(L, chunk) != LUA_OK) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    exit(1);
  }
  double rate = lua_tonumber(L, -1);
  lua_close(L);
  return rate;
}

/* A bare C->Lua call of an empty function: the floor for any engine call. */
static double bench_bare_call(void) {
  lua_State *L = luaL_newstate();
  luaL_dostring(L, "return function() end");
  uint64_t t0 = sb_now_ns();
  for (int i = 0; i < CALLS; i++) {
    lua_pushvalue(L, -1);
    lua_call(L, 0, 0);
  }
  double rate = (double)CALLS / ((double)(sb_now_ns() - t0) / 1e9);
  lua_close(L);
  return rate;
}

/* ---- reload under load ---- */

typedef struct decider {
  sb_policy_registry_t *reg;
  _Atomic bool *stop;
  long decisions, failures;
  uint64_t generation_seen;
  _Atomic uint64_t *published_at; /* ns at which generation g was published, by g % 256 */
  double pickup_us_max;
} decider_t;

static void *decide_loop(void *arg) {
  decider_t *d = arg;
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(d->reg, &err);
  sb_quota_decision_t out;
  int i = 0;
  while (!atomic_load(d->stop)) {
    sb_quota_input_t in = input_for(i++);
    if (sb_policy_quota_check(eng, &in, &out, &err) != 0) d->failures++;
    d->decisions++;
    uint64_t g = sb_policy_registry_generation(d->reg);
    if (g != d->generation_seen) {
      uint64_t pub = atomic_load(&d->published_at[g % 256]);
      if (pub) {
        double us = (double)(sb_now_ns() - pub) / 1e3;
        if (us > d->pickup_us_max) d->pickup_us_max = us;
      }
      d->generation_seen = g;
    }
  }
  sb_policy_engine_free(eng);
  return NULL;
}

static void write_file(const char *path, const char *text) {
  sb_error_t err;
  if (sb_write_file_atomic(path, text, strlen(text), 0644, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
}

static void bench_reload(const char *policies_dir, const sb_policy_limits_t *limits) {
  char tmp[] = "/tmp/sb-policy-bench-XXXXXX";
  if (!mkdtemp(tmp)) exit(1);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "cp %s/*.lua %s/", policies_dir, tmp);
  if (system(cmd) != 0) exit(1);
  char *path = sb_path_join(tmp, "quotas.lua");
  sb_error_t err;
  char *a = sb_read_file(path, NULL, &err);
  char *b = sb_xasprintf("%s\n-- variant b\n", a);

  sb_policy_registry_t *reg = sb_policy_registry_new(tmp, limits);
  sb_policy_report_t rep;
  if (sb_policy_registry_reload(reg, &rep, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  _Atomic bool stop = false;
  static _Atomic uint64_t published[256];
  decider_t d[2] = {{reg, &stop, 0, 0, 0, published, 0}, {reg, &stop, 0, 0, 0, published, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, decide_loop, &d[i]);
  usleep(200000);
  double ms[100];
  for (int i = 0; i < 100; i++) {
    write_file(path, i % 2 ? a : b);
    uint64_t t0 = sb_now_ns();
    if (sb_policy_registry_reload(reg, &rep, &err) != 0 || rep.loaded != 1) {
      fprintf(stderr, "reload %d failed: %s\n", i, rep.n ? rep.items[0].error : err.msg);
      exit(1);
    }
    uint64_t t1 = sb_now_ns();
    atomic_store(&published[sb_policy_registry_generation(reg) % 256], t1);
    ms[i] = (double)(t1 - t0) / 1e6;
    usleep(20000);
  }
  atomic_store(&stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  qsort(ms, 100, sizeof ms[0], cmp_double);
  printf("reload under load: 100 reloads, 2 threads deciding: %ld decisions, %ld failed\n",
         d[0].decisions + d[1].decisions, d[0].failures + d[1].failures);
  printf("  reload (compile + validate examples + publish): median %.3f ms, p99 %.3f ms, "
         "max %.3f ms (target <= 5 ms)\n",
         ms[50], ms[98], ms[99]);
  printf("  new version picked up by deciding threads within %.1f us of publication (max)\n",
         d[0].pickup_us_max > d[1].pickup_us_max ? d[0].pickup_us_max : d[1].pickup_us_max);
  sb_policy_registry_free(reg);
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
  if (system(cmd) != 0) exit(1);
  free(path);
  free(a);
  free(b);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : SB_SOURCE_DIR "/policies";
  sb_policy_limits_t limits = {1000000, (size_t)64 << 20};
  sb_policy_registry_t *reg = sb_policy_registry_new(dir, &limits);
  sb_policy_report_t rep;
  sb_error_t err;
  if (sb_policy_registry_reload(reg, &rep, &err) != 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  sb_policy_engine_t *eng = sb_policy_engine_new(reg, &err);
  char *quotas = sb_path_join(dir, "quotas.lua");
  double core[ROUNDS], lua[ROUNDS], bare[ROUNDS];
  for (int r = 0; r < ROUNDS; r++) { /* interleaved, so noise hits both sides */
    core[r] = bench_core(eng);
    lua[r] = bench_pure_lua(quotas);
    bare[r] = bench_bare_call();
  }
  double c = median(core, ROUNDS), l = median(lua, ROUNDS), b = median(bare, ROUNDS);
  printf("quota decisions, %d calls x %d rounds, medians:\n", CALLS, ROUNDS);
  printf("  through the core (sandbox, budget hook, memory cap, contract): %.2f M/s "
         "(target >= 2.00 M/s)\n", c / 1e6);
  printf("  pure-Lua loop, same calls:                                      %.2f M/s\n", l / 1e6);
  printf("  bare C->Lua call of an empty function:                          %.2f M/s\n", b / 1e6);
  printf("  core time / pure-Lua time: %.2fx (target <= 3x)\n", l / c);
  free(quotas);
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
  bench_reload(dir, &limits);
  return 0;
}

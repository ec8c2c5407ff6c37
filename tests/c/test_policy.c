/*
 * test_policy.c: the policy engine (core/policy.c): sandbox, instruction budget,
 * memory cap, contracts, examples, reload and its refusals, and that the engine keeps
 * answering after every kind of bad policy.
 *
 * Each test works on a temporary copy of policies/ so it can break files at will.
 */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy.h"
#include "policy_watch.h"
#include "util.h"

static char dir[64];
static sb_policy_limits_t limits = {1000000, (size_t)16 << 20};

static void put(const char *name, const char *text) {
  char *path = sb_xasprintf("%s/%s", dir, name);
  sb_error_t err;
  assert_int_equal(sb_write_file_atomic(path, text, strlen(text), 0644, &err), 0);
  free(path);
}

static char *get(const char *name) {
  char *path = sb_xasprintf("%s/%s", dir, name);
  sb_error_t err;
  char *text = sb_read_file(path, NULL, &err);
  assert_non_null(text);
  free(path);
  return text;
}

static int setup(void **state) {
  snprintf(dir, sizeof dir, "/tmp/sb-test-policy-XXXXXX");
  assert_non_null(mkdtemp(dir));
  DIR *d = opendir(SB_SOURCE_DIR "/policies");
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strstr(e->d_name, ".lua")) continue;
    char *src = sb_xasprintf(SB_SOURCE_DIR "/policies/%s", e->d_name);
    sb_error_t err;
    char *text = sb_read_file(src, NULL, &err);
    assert_non_null(text);
    put(e->d_name, text);
    free(text);
    free(src);
  }
  closedir(d);
  return 0;
}

static int teardown(void **state) {
  char *cmd = sb_xasprintf("rm -rf %s", dir);
  assert_int_equal(system(cmd), 0);
  free(cmd);
  return 0;
}

static sb_policy_registry_t *load(void) {
  sb_policy_registry_t *reg = sb_policy_registry_new(dir, &limits);
  sb_policy_report_t rep;
  sb_error_t err;
  if (sb_policy_registry_reload(reg, &rep, &err) != 0) fail_msg("load: %s", err.msg);
  return reg;
}

/* A quota decision that must succeed: the engine still answers. */
static void assert_answers(sb_policy_engine_t *eng) {
  sb_quota_input_t in = {1, 10000, 0, 9000};
  sb_quota_decision_t d;
  sb_error_t err;
  if (sb_policy_quota_check(eng, &in, &d, &err) != 0) fail_msg("engine stopped: %s", err.msg);
  assert_int_equal(d.status, SB_QUOTA_WARNING);
}

static int call_json(sb_policy_engine_t *eng, const char *policy, const char *fn,
                     const char *input, char **out, sb_error_t *err) {
  sb_policy_call_t call = {.policy = policy, .fn = fn};
  return sb_policy_call_json(eng, &call, input, out, err);
}

static void test_quota_edges(void **state) {
  sb_policy_registry_t *reg = load();
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(reg, &err);
  struct { sb_quota_input_t in; sb_quota_status_t st; sb_quota_action_t ac; sb_quota_resource_t rs; } cases[] = {
      {{10, 100000, 0, 89900}, SB_QUOTA_OK, SB_QUOTA_ACTION_NONE, SB_QUOTA_RES_NONE},
      {{10, 100000, 0, 90000}, SB_QUOTA_WARNING, SB_QUOTA_ACTION_NOTIFY, SB_QUOTA_RES_API},
      {{10, 100000, 0, 100000}, SB_QUOTA_EXCEEDED, SB_QUOTA_ACTION_THROTTLE, SB_QUOTA_RES_API},
      {{10, 100000, 9663676416, 0}, SB_QUOTA_WARNING, SB_QUOTA_ACTION_NOTIFY, SB_QUOTA_RES_STORAGE},
      {{10, 100000, 10737418240, 0}, SB_QUOTA_EXCEEDED, SB_QUOTA_ACTION_BLOCK_WRITES, SB_QUOTA_RES_STORAGE},
  };
  for (size_t i = 0; i < SB_ARRAY_LEN(cases); i++) {
    sb_quota_decision_t d;
    assert_int_equal(sb_policy_quota_check(eng, &cases[i].in, &d, &err), 0);
    assert_int_equal(d.status, cases[i].st);
    assert_int_equal(d.action, cases[i].ac);
    assert_int_equal(d.resource, cases[i].rs);
  }
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
}

/* An operator's own policy (no contract) that tries each forbidden thing. */
static const char probe[] =
    "local M = {}\n"
    "function M.io() return io.open('/etc/passwd') end\n"                  /* line 2 */
    "function M.exec() return os.execute('true') end\n"                    /* 3 */
    "function M.load() return load('return 1') end\n"                      /* 4 */
    "function M.require() return require('os') end\n"                      /* 5 */
    "function M.debug() return debug.getinfo(1) end\n"                     /* 6 */
    "function M.dump() return string.dump(M.dump) end\n"                   /* 7 */
    "function M.global() leaked = 1 return {} end\n"                       /* 8 */
    "function M.rawset() rawset(_G, 'x', 1) return {} end\n"               /* 9 */
    "function M.strmeta() getmetatable('').__index.upper = nil end\n"      /* 10 */
    "function M.libwrite() string.upper = nil end\n"                       /* 11 */
    "function M.loop() while true do end end\n"                            /* 12 */
    "function M.hog() local t = {} for i = 1, 1e9 do t[i] = {i} end end\n" /* 13 */
    "function M.raise() error('boom') end\n"                               /* 14 */
    "function M.raise_table() error({code = 1}) end\n"                     /* 15 */
    "function M.returns_fn() return math.floor end\n"                      /* 16 */
    "function M.fine(x) return {echo = x.v, t = os.time{year=2026,month=1,day=1,hour=0}} end\n"
    "function M.pcall_loop() while true do pcall(function() while true do end end) end end\n"
    "function M.pcall_hog() return {ok = pcall(M.hog)} end\n"                       /* 19 */
    "function M.xpcall_loop() while true do xpcall(M.loop, tostring) end end\n"   /* 20 */
    "function M.finalizer() setmetatable({}, {__gc = M.loop}) return {} end\n"   /* 21 */
    "function M.strdump() return ('').dump(M.fine) end\n"                          /* 22 */
    "function M.pattern() return {at = ('a'):rep(5000):find(('a*'):rep(30) .. 'b')} end\n"
    "function M.caught(x) local ok, e = pcall(error, 'x', 0)\n"                     /* 24 */
    "  local ok2, v = xpcall(function() return x.v end, tostring)\n"
    "  return {ok = ok, e = e, ok2 = ok2, v = v, m = ('k=v'):match('(%w+)=(%w+)')} end\n"
    "return M\n";

static void expect_error(sb_policy_engine_t *eng, const char *fn, const char *line,
                         const char *text) {
  char *out = NULL;
  sb_error_t err;
  int rc = call_json(eng, "probe", fn, "{\"v\": 1}", &out, &err);
  if (rc == 0) fail_msg("probe.%s succeeded: %s", fn, out);
  if (!strstr(err.msg, line)) fail_msg("probe.%s: error lacks '%s': %s", fn, line, err.msg);
  if (!strstr(err.msg, text)) fail_msg("probe.%s: error lacks '%s': %s", fn, text, err.msg);
  assert_answers(eng);
}

static void test_sandbox_and_limits(void **state) {
  put("probe.lua", probe);
  sb_policy_registry_t *reg = load();
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(reg, &err);
  expect_error(eng, "io", "probe.lua:2:", "undefined global 'io'");
  expect_error(eng, "exec", "probe.lua:3:", "execute");
  expect_error(eng, "load", "probe.lua:4:", "undefined global 'load'");
  expect_error(eng, "require", "probe.lua:5:", "undefined global 'require'");
  expect_error(eng, "debug", "probe.lua:6:", "undefined global 'debug'");
  expect_error(eng, "dump", "probe.lua:7:", "dump");
  expect_error(eng, "global", "probe.lua:8:", "may not set globals");
  expect_error(eng, "rawset", "probe.lua:9:", "undefined global 'rawset'");
  expect_error(eng, "strmeta", "probe.lua:10:", "attempt to index");
  expect_error(eng, "libwrite", "probe.lua:11:", "read-only");
  expect_error(eng, "loop", "probe.lua:12:", "instruction budget of 1000000 exceeded");
  expect_error(eng, "hog", "probe.lua:13:", "memory limit of 16 MiB exceeded");
  expect_error(eng, "raise", "probe.lua:14:", "boom");
  expect_error(eng, "raise_table", "probe.lua:15:", "error object is a table");
  expect_error(eng, "returns_fn", "probe.lua:16", "plain data");
  /* A budget or memory error stays an error through pcall and xpcall. */
  expect_error(eng, "pcall_loop", "probe.lua:18:", "instruction budget of 1000000 exceeded");
  expect_error(eng, "pcall_hog", "probe.lua:13:", "memory limit of 16 MiB exceeded");
  expect_error(eng, "xpcall_loop", "probe.lua:12:", "instruction budget of 1000000 exceeded");
  /* Finalizers run with hooks off: refused. No dump through the string metatable. A
   * pattern whose backtracking would run for ages in C is refused before it starts. */
  expect_error(eng, "finalizer", "probe.lua:21:", "__gc");
  expect_error(eng, "strdump", "probe.lua:22:", "dump");
  expect_error(eng, "pattern", "probe.lua:23:", "pattern too costly");
  char *out = NULL;
  assert_int_equal(call_json(eng, "probe", "fine", "{\"v\": 7}", &out, &err), 0);
  assert_non_null(strstr(out, "\"echo\":7"));
  free(out);
  /* pcall, xpcall and patterns still work as Lua's for everything else. */
  assert_int_equal(call_json(eng, "probe", "caught", "{\"v\": 7}", &out, &err), 0);
  assert_non_null(strstr(out, "\"ok\":false"));
  assert_non_null(strstr(out, "\"e\":\"x\""));
  assert_non_null(strstr(out, "\"ok2\":true"));
  assert_non_null(strstr(out, "\"v\":7"));
  assert_non_null(strstr(out, "\"m\":\"k\""));
  free(out);
  /* A global set by a call that failed did not stick. */
  expect_error(eng, "global", "probe.lua:8:", "may not set globals");
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
  char *path = sb_xasprintf("%s/probe.lua", dir);
  unlink(path);
  free(path);
}

static void test_contract_breach_at_runtime(void **state) {
  /* Examples pass, but one input gets an answer outside the contract. */
  char *src = get("quotas.lua");
  char *bad = sb_xasprintf("%s", src);
  char *hook = strstr(bad, "function M.check(input)\n");
  assert_non_null(hook);
  char *patched = sb_xasprintf(
      "%.*sfunction M.check(input)\n  if input.quotas.storage_gb == 7 then return "
      "{ status = 'maybe', action = 'none' } end\n%s",
      (int)(hook - bad), bad, hook + strlen("function M.check(input)\n"));
  put("quotas.lua", patched);
  sb_policy_registry_t *reg = load();
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(reg, &err);
  sb_quota_input_t in = {7, 100, 0, 0};
  sb_quota_decision_t d;
  assert_int_equal(sb_policy_quota_check(eng, &in, &d, &err), -1);
  assert_non_null(strstr(err.msg, "quotas.lua:"));
  assert_non_null(strstr(err.msg, "outside its contract"));
  assert_non_null(strstr(err.msg, "'status' is 'maybe'"));
  assert_answers(eng);
  char *out = NULL;
  assert_int_equal(call_json(eng, "quotas", "check",
                             "{\"quotas\":{\"storage_gb\":7,\"api_requests_daily\":1},"
                             "\"usage\":{\"storage_bytes\":0,\"api_requests_today\":0}}",
                             &out, &err), -1);
  assert_non_null(strstr(err.msg, "'status' is 'maybe'"));
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
  put("quotas.lua", src);
  free(src), free(bad), free(patched);
}

static const sb_policy_result_t *result_for(const sb_policy_report_t *rep, const char *name) {
  for (int i = 0; i < rep->n; i++)
    if (strcmp(rep->items[i].name, name) == 0) return &rep->items[i];
  fail_msg("no result for %s", name);
  return NULL;
}

static void test_reload_refuses_broken_versions_and_keeps_serving(void **state) {
  sb_policy_registry_t *reg = load();
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(reg, &err);
  sb_policy_info_t before[SB_POLICY_MAX], after[SB_POLICY_MAX];
  int n = sb_policy_registry_versions(reg, before, SB_POLICY_MAX);
  uint64_t gen = sb_policy_registry_generation(reg);
  char *good = get("quotas.lua");
  struct { const char *text; const char *why; } broken[] = {
      {"local M = {}\nfunction M.check(input)\n  return {\nend\nreturn M\n", "quotas.lua:4:"},
      {"local M = {}\nreturn M\n", "function check is missing"},
      {"while true do end\n", "instruction budget"},
      {"leak = 1\nreturn {}\n", "quotas.lua:1: policies may not set globals"},
      {"local M = {}\nfunction M.check() return {status='ok', action='none'} end\n"
       "M.examples = {{fn='check', input={}, output={status='warning', action='notify', "
       "resource='storage'}}}\nreturn M\n", "example 1 (check) answered"},
      {"local M = {}\nfunction M.check() return {status='ok', action='none'} end\nreturn M\n",
       "needs M.examples"},
      {"return 42\n", "must return a table"},
  };
  for (size_t i = 0; i < SB_ARRAY_LEN(broken); i++) {
    put("quotas.lua", broken[i].text);
    sb_policy_report_t rep;
    assert_int_equal(sb_policy_registry_reload(reg, &rep, &err), 0);
    const sb_policy_result_t *r = result_for(&rep, "quotas");
    assert_int_equal(r->outcome, SB_POLICY_REFUSED);
    if (!strstr(r->error, broken[i].why)) fail_msg("case %zu: '%s' lacks '%s'", i, r->error, broken[i].why);
    assert_int_equal(sb_policy_registry_generation(reg), gen);
    assert_answers(eng);
  }
  assert_int_equal(sb_policy_registry_versions(reg, after, SB_POLICY_MAX), n);
  for (int i = 0; i < n; i++) assert_string_equal(before[i].sha256, after[i].sha256);

  /* A good edit is swapped in; the engine picks it up before its next call. */
  char *edited = sb_xasprintf("%s\n-- edited\n", good);
  put("quotas.lua", edited);
  sb_policy_report_t rep;
  assert_int_equal(sb_policy_registry_reload(reg, &rep, &err), 0);
  assert_int_equal(result_for(&rep, "quotas")->outcome, SB_POLICY_LOADED);
  assert_int_equal(result_for(&rep, "pricing")->outcome, SB_POLICY_UNCHANGED);
  assert_true(sb_policy_registry_generation(reg) == gen + 1);
  char want[65];
  sb_sha256_hex(edited, strlen(edited), want);
  sb_policy_call_t call = {.policy = "quotas", .fn = "check"};
  char *out = NULL;
  assert_int_equal(sb_policy_call_json(eng, &call,
                                       "{\"quotas\":{\"storage_gb\":1,\"api_requests_daily\":1},"
                                       "\"usage\":{\"storage_bytes\":0,\"api_requests_today\":0}}",
                                       &out, &err), 0);
  assert_string_equal(call.sha256, want);
  free(out);

  /* A removed file keeps serving its last version. */
  char *path = sb_xasprintf("%s/quotas.lua", dir);
  unlink(path);
  assert_int_equal(sb_policy_registry_reload(reg, &rep, &err), 0);
  assert_int_equal(result_for(&rep, "quotas")->outcome, SB_POLICY_REMOVED);
  assert_answers(eng);
  put("quotas.lua", good);
  free(path), free(good), free(edited);
  sb_policy_engine_free(eng);
  sb_policy_registry_free(reg);
}

static void test_first_load_needs_every_policy(void **state) {
  char *src = get("lifecycle.lua");
  char *path = sb_xasprintf("%s/lifecycle.lua", dir);
  unlink(path);
  sb_policy_registry_t *reg = sb_policy_registry_new(dir, &limits);
  sb_policy_report_t rep;
  sb_error_t err;
  assert_int_equal(sb_policy_registry_reload(reg, &rep, &err), -1);
  assert_non_null(strstr(err.msg, "policy lifecycle cannot be loaded"));
  sb_policy_registry_free(reg);
  /* policy check reports it too. */
  assert_int_equal(sb_policy_check_dir(dir, &limits, &rep, &err), 1);
  put("lifecycle.lua", "local M = {}\nfunction M.on_event( return M\n");
  assert_int_equal(sb_policy_check_dir(dir, &limits, &rep, &err), 1);
  assert_non_null(strstr(result_for(&rep, "lifecycle")->error, "lifecycle.lua:2:"));
  put("lifecycle.lua", src);
  assert_int_equal(sb_policy_check_dir(dir, &limits, &rep, &err), 0);
  free(src), free(path);
}

typedef struct {
  sb_policy_registry_t *reg;
  _Atomic bool *stop;
  long ok, failed;
} worker_t;

static void *decide(void *arg) {
  worker_t *w = arg;
  sb_error_t err;
  sb_policy_engine_t *eng = sb_policy_engine_new(w->reg, &err);
  while (!atomic_load(w->stop)) {
    sb_quota_input_t in = {1, 10000, 0, 9000};
    sb_quota_decision_t d;
    if (sb_policy_quota_check(eng, &in, &d, &err) == 0 && d.status == SB_QUOTA_WARNING) w->ok++;
    else w->failed++;
  }
  sb_policy_engine_free(eng);
  return NULL;
}

static void test_reloads_while_threads_decide(void **state) {
  sb_policy_registry_t *reg = load();
  char *good = get("quotas.lua");
  _Atomic bool stop = false;
  worker_t w[2] = {{reg, &stop, 0, 0}, {reg, &stop, 0, 0}};
  pthread_t th[2];
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, decide, &w[i]);
  sb_error_t err;
  for (int i = 0; i < 40; i++) {
    /* Good, broken, good again: nothing a decider sees may fail. */
    char *v = i % 4 == 3 ? sb_xasprintf("syntax error here %d", i) : sb_xasprintf("%s\n-- %d\n", good, i);
    put("quotas.lua", v);
    free(v);
    sb_policy_report_t rep;
    assert_int_equal(sb_policy_registry_reload(reg, &rep, &err), 0);
    usleep(2000);
  }
  atomic_store(&stop, true);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  assert_int_equal(w[0].failed + w[1].failed, 0);
  assert_true(w[0].ok > 100 && w[1].ok > 100);
  put("quotas.lua", good);
  free(good);
  sb_policy_registry_free(reg);
}

/* Waits up to 5 s for cond. */
#define WAIT_FOR(cond)                                           \
  do {                                                           \
    for (int i_ = 0; i_ < 500 && !(cond); i_++) usleep(10000);   \
    assert_true(cond);                                           \
  } while (0)

static void test_watcher_reloads_on_save_and_on_trigger(void **state) {
  sb_policy_registry_t *reg = load();
  sb_error_t err;
  sb_policy_watch_t *w = sb_policy_watch_start(reg, &err);
  assert_non_null(w);
  char *good = get("quotas.lua");
  uint64_t gen = sb_policy_registry_generation(reg);

  char *edited = sb_xasprintf("%s\n-- saved by an operator\n", good);
  put("quotas.lua", edited); /* written to a temporary file and renamed, as editors do */
  WAIT_FOR(sb_policy_registry_generation(reg) == gen + 1);

  unsigned long reloads = sb_policy_watch_reloads(w);
  put("quotas.lua", "this is not lua");
  WAIT_FOR(sb_policy_watch_reloads(w) > reloads);
  assert_int_equal(sb_policy_registry_generation(reg), gen + 1); /* refused */

  put("quotas.lua", good); /* and back */
  WAIT_FOR(sb_policy_registry_generation(reg) == gen + 2);

  reloads = sb_policy_watch_reloads(w);
  sb_policy_watch_trigger(w); /* what SIGHUP does */
  WAIT_FOR(sb_policy_watch_reloads(w) > reloads);
  sb_policy_watch_stop(w);
  sb_policy_registry_free(reg);
  free(good), free(edited);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quota_edges),
      cmocka_unit_test(test_sandbox_and_limits),
      cmocka_unit_test(test_contract_breach_at_runtime),
      cmocka_unit_test(test_reload_refuses_broken_versions_and_keeps_serving),
      cmocka_unit_test(test_first_load_needs_every_policy),
      cmocka_unit_test(test_reloads_while_threads_decide),
      cmocka_unit_test(test_watcher_reloads_on_save_and_on_trigger),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

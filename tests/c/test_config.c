/*
 * test_config.c: settings from defaults, a Lua config file, the environment and the
 * command line, in that order (core/config.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "util.h"

static char conf_path[64];

static void write_conf(const char *text) {
  snprintf(conf_path, sizeof conf_path, "/tmp/sb-test-config-%d.conf", (int)getpid());
  FILE *f = fopen(conf_path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}

static int clear_env(void **state) {
  for (const sb_config_option_t *o = sb_config_options; o->name; o++) unsetenv(o->env);
  unsetenv("SOLOBASE_CONFIG");
  return 0;
}

static int cleanup(void **state) {
  unlink(conf_path);
  sb_config_free();
  return 0;
}

static void test_defaults(void **state) {
  sb_error_t err;
  assert_int_equal(sb_config_load(NULL, &err), 0);
  assert_int_equal(sb_config_finish(&err), 0);
  assert_null(sb_config()->database_url);
  assert_string_equal(sb_config()->listen, "127.0.0.1:8080");
  assert_int_equal(sb_config()->health_check_interval_s, 300);
  assert_int_equal(sb_config()->events_fanout_busy_pct, 50);
  assert_true(sb_config()->data_dir[0] == '/');
  assert_non_null(strstr(sb_config()->schema_dir, "/schema"));
}

static void test_precedence_file_env_cli(void **state) {
  sb_error_t err;
  write_conf("workers = 7\nlisten = '0.0.0.0:9000'\nlog_level = 'warn'\n");
  setenv("SOLOBASE_WORKERS", "9", 1);
  assert_int_equal(sb_config_load(conf_path, &err), 0);
  assert_int_equal(sb_config()->workers, 9);                  /* env beats file */
  assert_string_equal(sb_config()->listen, "0.0.0.0:9000");   /* file beats default */
  assert_int_equal(sb_config_set("workers", "2", &err), 0);   /* command line beats env */
  assert_int_equal(sb_config_finish(&err), 0);
  assert_int_equal(sb_config()->workers, 2);
}

static void test_file_errors_name_file_and_line(void **state) {
  sb_error_t err;
  write_conf("workers = 3\nwokers = 4\n");
  assert_int_equal(sb_config_load(conf_path, &err), -1);
  assert_non_null(strstr(err.msg, ":2:"));
  assert_non_null(strstr(err.msg, "unknown setting 'wokers'"));
  write_conf("workers = 'many'\n");
  assert_int_equal(sb_config_load(conf_path, &err), -1);
  assert_non_null(strstr(err.msg, "must be an integer"));
  write_conf("workers = \n");
  assert_int_equal(sb_config_load(conf_path, &err), -1);
  assert_non_null(strstr(err.msg, conf_path));
}

static void test_bad_values_are_refused(void **state) {
  sb_error_t err;
  setenv("SOLOBASE_WORKERS", "-1", 1);
  assert_int_equal(sb_config_load(NULL, &err), -1);
  assert_non_null(strstr(err.msg, "SOLOBASE_WORKERS"));
  unsetenv("SOLOBASE_WORKERS");
  assert_int_equal(sb_config_load(NULL, &err), 0);
  assert_int_equal(sb_config_set("nonsense", "1", &err), -1);
  assert_int_equal(sb_config_set("log_level", "loud", &err), 0);
  assert_int_equal(sb_config_finish(&err), -1);
  assert_non_null(strstr(err.msg, "log_level"));
  /* A share of the loop's time: 1 to 100. */
  assert_int_equal(sb_config_set("log_level", "info", &err), 0);
  assert_int_equal(sb_config_set("events_fanout_busy_pct", "0", &err), 0);
  assert_int_equal(sb_config_finish(&err), -1);
  assert_non_null(strstr(err.msg, "events_fanout_busy_pct"));
  assert_int_equal(sb_config_set("events_fanout_busy_pct", "101", &err), 0);
  assert_int_equal(sb_config_finish(&err), -1);
  assert_int_equal(sb_config_set("events_fanout_busy_pct", "100", &err), 0);
  assert_int_equal(sb_config_finish(&err), 0);
  assert_int_equal(sb_config()->events_fanout_busy_pct, 100);
  /* Drivers that are not built are refused by name, not when the engine starts. */
  const char *bad[][2] = {{"fleet_driver", "aws"}, {"billing_driver", "stripe"},
                          {"health_check_interval_s", "0"}};
  const char *good[] = {"local", "offline", "300"};
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sb_config_set(bad[i][0], bad[i][1], &err), 0);
    assert_int_equal(sb_config_finish(&err), -1);
    assert_non_null(strstr(err.msg, bad[i][0]));
    assert_int_equal(sb_config_set(bad[i][0], good[i], &err), 0);
    assert_int_equal(sb_config_finish(&err), 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_defaults, clear_env, cleanup),
      cmocka_unit_test_setup_teardown(test_precedence_file_env_cli, clear_env, cleanup),
      cmocka_unit_test_setup_teardown(test_file_errors_name_file_and_line, clear_env, cleanup),
      cmocka_unit_test_setup_teardown(test_bad_values_are_refused, clear_env, cleanup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

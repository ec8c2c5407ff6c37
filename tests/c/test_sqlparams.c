/*
 * test_sqlparams.c: $name to $n rewriting (core/sqlparams.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "sqlparams.h"

static void test_names_become_positions_in_first_use_order(void **state) {
  sb_sql_named_t p;
  sb_error_t err;
  assert_int_equal(sb_sql_named_parse("SELECT $b, $a, $b, $long_name_1", &p, &err), 0);
  assert_string_equal(p.sql, "SELECT $1, $2, $1, $3");
  assert_int_equal(p.n, 3);
  assert_string_equal(p.names[0], "b");
  assert_string_equal(p.names[2], "long_name_1");
  assert_int_equal(sb_sql_named_index(&p, "a"), 2);
  assert_int_equal(sb_sql_named_index(&p, "zzz"), 0);
  sb_sql_named_free(&p);
}

static void test_quoted_text_and_comments_are_untouched(void **state) {
  sb_sql_named_t p;
  sb_error_t err;
  const char *sql = "SELECT '$x', 'it''s $y', \"$col\", $z -- $c\n"
                    "/* $d */ $tag$ body $e $tag$, $$ $f $$";
  assert_int_equal(sb_sql_named_parse(sql, &p, &err), 0);
  assert_string_equal(p.sql, "SELECT '$x', 'it''s $y', \"$col\", $1 -- $c\n"
                             "/* $d */ $tag$ body $e $tag$, $$ $f $$");
  assert_int_equal(p.n, 1);
  assert_string_equal(p.names[0], "z");
  sb_sql_named_free(&p);
}

static void test_positional_only_is_unchanged_and_mixing_is_refused(void **state) {
  sb_sql_named_t p;
  sb_error_t err;
  assert_int_equal(sb_sql_named_parse("SELECT $1, $2", &p, &err), 0);
  assert_string_equal(p.sql, "SELECT $1, $2");
  assert_int_equal(p.n, 0);
  sb_sql_named_free(&p);
  assert_int_equal(sb_sql_named_parse("SELECT $1, $a", &p, &err), -1);
  assert_non_null(strstr(err.msg, "not both"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_become_positions_in_first_use_order),
      cmocka_unit_test(test_quoted_text_and_comments_are_untouched),
      cmocka_unit_test(test_positional_only_is_unchanged_and_mixing_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

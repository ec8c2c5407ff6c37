/*
 * test_util.c: hashing, hex, tokens, constant-time comparison, paths (core/util.c),
 * and the redaction of connection strings (core/log.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

static void test_sha256_matches_known_vectors(void **state) {
  char hex[65];
  sb_sha256_hex("", 0, hex);
  assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  sb_sha256_hex("abc", 3, hex);
  assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_random_token_is_alphanumeric_and_varies(void **state) {
  char a[33], b[33];
  sb_error_t err;
  assert_int_equal(sb_random_token(a, 32, &err), 0);
  assert_int_equal(sb_random_token(b, 32, &err), 0);
  assert_int_equal(strlen(a), 32);
  assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
                   32);
  assert_string_not_equal(a, b);
}

static void test_ct_equal(void **state) {
  assert_true(sb_ct_equal("secret", 6, "secret", 6));
  assert_false(sb_ct_equal("secret", 6, "secreT", 6));
  assert_false(sb_ct_equal("secret", 6, "secret!", 7));
  assert_true(sb_ct_equal("", 0, "", 0));
}

static void test_word_in(void **state) {
  (void)state;
  assert_true(sb_word_in("type id filter", "type"));
  assert_true(sb_word_in("type id filter", "filter"));
  assert_false(sb_word_in("type id filter", "i"));
  assert_false(sb_word_in("type id filter", "filters"));
  assert_false(sb_word_in("type id filter", "id filter"));
  assert_false(sb_word_in("type", ""));
  assert_false(sb_word_in("", "type"));
}

static void test_paths(void **state) {
  char *p = sb_path_join("/a/b/", "c");
  assert_string_equal(p, "/a/b/c");
  free(p);
  p = sb_path_join("/a", "/abs");
  assert_string_equal(p, "/abs");
  free(p);
  p = sb_path_absolute("./x/y");
  assert_true(p[0] == '/');
  assert_non_null(strstr(p, "/x/y"));
  assert_null(strstr(p, "/./"));
  free(p);
}

static void test_redaction_never_shows_the_password(void **state) {
  char out[256];
  sb_redact_conninfo("postgresql://admin:hunter2@db.example.com:5432/solobase_saas", out,
                     sizeof out);
  assert_null(strstr(out, "hunter2"));
  assert_string_equal(out, "postgresql://admin:xxxxx@db.example.com:5432/solobase_saas");
  sb_redact_conninfo("host=h port=1 dbname=d user=u password=s3cret", out, sizeof out);
  assert_null(strstr(out, "s3cret"));
  assert_string_equal(out, "postgresql://u:xxxxx@h:1/d");
  sb_redact_conninfo("not a url at all ===", out, sizeof out);
  assert_string_equal(out, "(unparsable connection string)");
}

static void test_free_port_is_usable(void **state) {
  sb_error_t err;
  int port = sb_free_tcp_port(&err);
  assert_true(port > 1024 && port < 65536);
  assert_false(sb_tcp_port_in_use(port));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sha256_matches_known_vectors),
      cmocka_unit_test(test_random_token_is_alphanumeric_and_varies),
      cmocka_unit_test(test_ct_equal),
      cmocka_unit_test(test_word_in),
      cmocka_unit_test(test_paths),
      cmocka_unit_test(test_redaction_never_shows_the_password),
      cmocka_unit_test(test_free_port_is_usable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

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

static void test_uuid_canonical(void **state) {
  (void)state;
  char out[37] = "untouched";
  assert_true(sb_uuid_canonical("6F04A1B2-0C3D-4E5F-8A9B-0C1D2E3F4A5B", 36, out));
  assert_string_equal(out, "6f04a1b2-0c3d-4e5f-8a9b-0c1d2e3f4a5b");
  const char *bad[] = {"6f04a1b2-0c3d-4e5f-8a9b-0c1d2e3f4a5",   /* 35 */
                       "6f04a1b2x0c3d-4e5f-8a9b-0c1d2e3f4a5b",  /* no dash */
                       "6g04a1b2-0c3d-4e5f-8a9b-0c1d2e3f4a5b",  /* not hex */
                       "not-a-uuid-but-36-characters-long-xx"};
  strcpy(out, "untouched");
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) assert_false(sb_uuid_canonical(bad[i], strlen(bad[i]), out));
  assert_string_equal(out, "untouched");
  assert_false(sb_uuid_canonical("6f04a1b2-0c3d-4e5f-8a9b-0c1d2e3f4a5b\0", 37, out));
}

static void test_utf8(void **state) {
  (void)state;
  assert_int_equal(sb_utf8_length("abc", 3), 3);
  assert_int_equal(sb_utf8_length("\xc3\xa9t\xc3\xa9", 5), 3);           /* été */
  assert_int_equal(sb_utf8_length("\xf0\x9f\x98\x80", 4), 1);            /* U+1F600 */
  assert_int_equal(sb_utf8_length("a\0b", 3), -1);                          /* NUL */
  assert_int_equal(sb_utf8_length("\xff", 1), -1);                          /* not UTF-8 */
  assert_int_equal(sb_utf8_length("\xc0\xaf", 2), -1);                      /* overlong */
  assert_int_equal(sb_utf8_length("\xed\xa0\x80", 3), -1);                 /* surrogate */
  assert_int_equal(sb_utf8_length("\xf4\x90\x80\x80", 4), -1);            /* past U+10FFFF */
  assert_int_equal(sb_utf8_length("\xe2\x82", 2), -1);                      /* truncated */
  assert_int_equal(sb_utf8_char("\xe2\x82\xac", 3), 3);                    /* euro */
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
      cmocka_unit_test(test_uuid_canonical),
      cmocka_unit_test(test_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

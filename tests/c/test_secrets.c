/*
 * test_secrets.c: AES-256-GCM secrets (core/secrets.c): round trip, binding to key and
 * context, tamper detection, rotation, and agreement with OpenSSL's own GCM (the
 * `openssl enc` tool does not do AEAD, so an independent EVP decryption stands in).
 */
#include <openssl/evp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "secrets.h"

static const char key_a[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
static const char key_b[] = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

static void test_round_trip_and_binding(void **state) {
  sb_error_t err;
  sb_keyring_t *kr = sb_keyring_from_hex(key_a, NULL, &err);
  assert_non_null(kr);
  unsigned char *blob;
  size_t n;
  char kid[SB_KEY_ID_LEN + 1];
  const char *secret = "tenant-password-123";
  assert_int_equal(sb_secret_encrypt(kr, "instances:1", secret, strlen(secret), &blob, &n, kid, &err), 0);
  assert_int_equal(n, 1 + 12 + strlen(secret) + 16);
  assert_null(memmem(blob, n, secret, strlen(secret)));
  char *plain;
  size_t len;
  assert_int_equal(sb_secret_decrypt(kr, "instances:1", kid, blob, n, &plain, &len, &err), 0);
  assert_string_equal(plain, secret);
  free(plain);
  /* Another row's context, a flipped bit, a wrong key id: all refused. */
  assert_int_equal(sb_secret_decrypt(kr, "instances:2", kid, blob, n, &plain, &len, &err), -1);
  blob[20] ^= 1;
  assert_int_equal(sb_secret_decrypt(kr, "instances:1", kid, blob, n, &plain, &len, &err), -1);
  blob[20] ^= 1;
  assert_int_equal(sb_secret_decrypt(kr, "instances:1", "0000000000000000", blob, n, &plain, &len, &err), -1);
  assert_non_null(strstr(err.msg, "not loaded"));
  /* Two encryptions of one secret differ (random nonce). */
  unsigned char *blob2;
  size_t n2;
  assert_int_equal(sb_secret_encrypt(kr, "instances:1", secret, strlen(secret), &blob2, &n2, kid, &err), 0);
  assert_memory_not_equal(blob, blob2, n);
  free(blob), free(blob2);
  sb_keyring_free(kr);
}

static void test_rotation(void **state) {
  sb_error_t err;
  sb_keyring_t *old = sb_keyring_from_hex(key_a, NULL, &err);
  unsigned char *blob;
  size_t n;
  char kid[SB_KEY_ID_LEN + 1];
  assert_int_equal(sb_secret_encrypt(old, "ctx", "s3cret", 6, &blob, &n, kid, &err), 0);
  /* The new keyring: key b current, key a still accepted. */
  sb_keyring_t *kr = sb_keyring_from_hex(key_b, key_a, &err);
  assert_string_not_equal(sb_keyring_current_id(kr), kid);
  char *plain;
  assert_int_equal(sb_secret_decrypt(kr, "ctx", kid, blob, n, &plain, NULL, &err), 0);
  assert_string_equal(plain, "s3cret");
  free(plain);
  sb_keyring_t *only_b = sb_keyring_from_hex(key_b, NULL, &err);
  assert_int_equal(sb_secret_decrypt(only_b, "ctx", kid, blob, n, &plain, NULL, &err), -1);
  free(blob);
  sb_keyring_free(old), sb_keyring_free(kr), sb_keyring_free(only_b);
  assert_null(sb_keyring_from_hex("abcd", NULL, &err));
  assert_null(sb_keyring_from_hex(key_a, "zz", &err));
}

/* An independent decryption with EVP, from the documented blob layout. */
static void test_layout_is_plain_aes_256_gcm(void **state) {
  sb_error_t err;
  sb_keyring_t *kr = sb_keyring_from_hex(key_a, NULL, &err);
  unsigned char *blob;
  size_t n;
  char kid[SB_KEY_ID_LEN + 1];
  assert_int_equal(sb_secret_encrypt(kr, "ctx", "hello", 5, &blob, &n, kid, &err), 0);
  unsigned char key[32];
  for (int i = 0; i < 32; i++) key[i] = (unsigned char)i;
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  unsigned char out[16];
  int len = 0;
  assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, blob + 1), 1);
  assert_int_equal(EVP_DecryptUpdate(c, NULL, &len, (unsigned char *)kid, 16), 1);
  assert_int_equal(EVP_DecryptUpdate(c, NULL, &len, (const unsigned char *)"ctx", 3), 1);
  assert_int_equal(EVP_DecryptUpdate(c, out, &len, blob + 13, 5), 1);
  assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, blob + 18), 1);
  assert_int_equal(EVP_DecryptFinal_ex(c, out + len, &len), 1);
  assert_memory_equal(out, "hello", 5);
  EVP_CIPHER_CTX_free(c);
  char *param = sb_secret_bytea_param(blob, n);
  assert_true(strncmp(param, "\\x01", 4) == 0);
  assert_int_equal(strlen(param), 2 + 2 * n);
  free(param);
  free(blob);
  sb_keyring_free(kr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_and_binding),
      cmocka_unit_test(test_rotation),
      cmocka_unit_test(test_layout_is_plain_aes_256_gcm),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

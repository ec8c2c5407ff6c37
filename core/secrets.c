/*
 * secrets.c: AES-256-GCM secrets under a rotating master key (see secrets.h), with
 * OpenSSL's EVP interface.
 */
#include "secrets.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define VERSION 0x01
#define MAX_KEYS 8

typedef struct key {
  unsigned char bytes[KEY_LEN];
  char id[SB_KEY_ID_LEN + 1];
} master_key_t;

/* AES-256-GCM, fetched from OpenSSL's provider once: the implicit fetch behind
 * EVP_aes_256_gcm() takes a lock on every call. */
static EVP_CIPHER *gcm;
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static void fetch_gcm(void) { gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL); }
static const EVP_CIPHER *aes_gcm(void) {
  pthread_once(&gcm_once, fetch_gcm);
  return gcm ? gcm : EVP_aes_256_gcm();
}

struct sb_keyring {
  master_key_t keys[MAX_KEYS]; /* [0] is current */
  int n;
};

static int parse_hex_key(const char *hex, size_t len, master_key_t *k, sb_error_t *err) {
  while (len && isspace((unsigned char)hex[len - 1])) len--;
  while (len && isspace((unsigned char)*hex)) hex++, len--;
  if (len != 2 * KEY_LEN) {
    sb_error_set(err, "a master key must be %d hex digits, got %zu characters", 2 * KEY_LEN, len);
    return -1;
  }
  for (size_t i = 0; i < KEY_LEN; i++) {
    char pair[3] = {hex[2 * i], hex[2 * i + 1], 0};
    char *end;
    if (!isxdigit((unsigned char)pair[0]) || !isxdigit((unsigned char)pair[1])) {
      sb_error_set(err, "a master key must be hex digits only");
      return -1;
    }
    k->bytes[i] = (unsigned char)strtoul(pair, &end, 16);
  }
  /* The id names the key without revealing it. */
  unsigned char buf[16 + KEY_LEN];
  memcpy(buf, "solobase-key-id:", 16);
  memcpy(buf + 16, k->bytes, KEY_LEN);
  char sha[65];
  sb_sha256_hex(buf, sizeof buf, sha);
  explicit_bzero(buf, sizeof buf);
  memcpy(k->id, sha, SB_KEY_ID_LEN);
  k->id[SB_KEY_ID_LEN] = '\0';
  return 0;
}

static int add_keys(sb_keyring_t *kr, const char *list, sb_error_t *err) {
  while (list && *list) {
    size_t n = strcspn(list, ",");
    if (n) {
      if (kr->n == MAX_KEYS) {
        sb_error_set(err, "at most %d master keys", MAX_KEYS);
        return -1;
      }
      if (parse_hex_key(list, n, &kr->keys[kr->n], err) != 0) return -1;
      kr->n++;
    }
    list += n + (list[n] == ',');
  }
  return 0;
}

sb_keyring_t *sb_keyring_from_hex(const char *current, const char *old, sb_error_t *err) {
  sb_keyring_t *kr = sb_xcalloc(1, sizeof *kr);
  if (parse_hex_key(current, strlen(current), &kr->keys[0], err) != 0 ||
      (kr->n = 1, add_keys(kr, old, err) != 0)) {
    sb_keyring_free(kr);
    return NULL;
  }
  return kr;
}

sb_keyring_t *sb_keyring_load(sb_error_t *err) {
  const sb_config_t *cfg = sb_config();
  if (cfg->master_key) return sb_keyring_from_hex(cfg->master_key, cfg->master_keys_old, err);
  char *default_file = sb_path_join(cfg->data_dir, "master.key");
  bool is_default = strcmp(cfg->master_key_file, default_file) == 0;
  free(default_file);
  size_t len;
  char *text = sb_read_file(cfg->master_key_file, &len, NULL);
  if (!text && is_default) {
    /* First use of the default key file: make a key nobody else can read. */
    unsigned char raw[KEY_LEN];
    char hex[2 * KEY_LEN + 2];
    if (sb_random_bytes(raw, sizeof raw, err) != 0) return NULL;
    sb_hex_encode(raw, sizeof raw, hex);
    explicit_bzero(raw, sizeof raw);
    strcat(hex, "\n");
    if (sb_mkdir_p(cfg->data_dir, 0700, err) != 0 ||
        sb_write_file_atomic(cfg->master_key_file, hex, strlen(hex), 0600, err) != 0) {
      explicit_bzero(hex, sizeof hex);
      return NULL;
    }
    explicit_bzero(hex, sizeof hex);
    sb_info("secrets", "created a master key in %s (mode 0600); back it up: without it no "
                       "stored secret can be read", cfg->master_key_file);
    text = sb_read_file(cfg->master_key_file, &len, err);
  }
  if (!text) {
    sb_error_set(err, "cannot read the master key file %s", cfg->master_key_file);
    return NULL;
  }
  struct stat st;
  if (stat(cfg->master_key_file, &st) == 0 && (st.st_mode & 077))
    sb_warn("secrets", "%s is readable by others; chmod 600 it", cfg->master_key_file);
  sb_keyring_t *kr = sb_keyring_from_hex(text, cfg->master_keys_old, err);
  explicit_bzero(text, len);
  free(text);
  return kr;
}

void sb_keyring_free(sb_keyring_t *kr) {
  if (!kr) return;
  explicit_bzero(kr, sizeof *kr);
  free(kr);
}

const char *sb_keyring_current_id(const sb_keyring_t *kr) { return kr->keys[0].id; }

int sb_secret_encrypt(const sb_keyring_t *kr, const char *context, const void *plain,
                      size_t len, unsigned char **blob, size_t *blob_len, char *key_id,
                      sb_error_t *err) {
  const master_key_t *k = &kr->keys[0];
  size_t total = 1 + NONCE_LEN + len + TAG_LEN;
  unsigned char *out = sb_xmalloc(total);
  out[0] = VERSION;
  int n = 0, rc = -1;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx || sb_random_bytes(out + 1, NONCE_LEN, err) != 0) goto done;
  if (EVP_EncryptInit_ex(ctx, aes_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
      EVP_EncryptInit_ex(ctx, NULL, NULL, k->bytes, out + 1) != 1 ||
      EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)k->id, SB_KEY_ID_LEN) != 1 ||
      EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)context, (int)strlen(context)) != 1 ||
      EVP_EncryptUpdate(ctx, out + 1 + NONCE_LEN, &n, plain, (int)len) != 1 ||
      EVP_EncryptFinal_ex(ctx, out + 1 + NONCE_LEN + n, &n) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + 1 + NONCE_LEN + len) != 1) {
    sb_error_set(err, "encryption failed");
    goto done;
  }
  *blob = out;
  *blob_len = total;
  memcpy(key_id, k->id, SB_KEY_ID_LEN + 1);
  out = NULL;
  rc = 0;
done:
  EVP_CIPHER_CTX_free(ctx);
  free(out);
  return rc;
}

int sb_secret_decrypt(const sb_keyring_t *kr, const char *context, const char *key_id,
                      const unsigned char *blob, size_t blob_len, char **plain, size_t *len,
                      sb_error_t *err) {
  const master_key_t *k = NULL;
  for (int i = 0; i < kr->n && !k; i++)
    if (key_id && strcmp(kr->keys[i].id, key_id) == 0) k = &kr->keys[i];
  if (!k) {
    sb_error_set(err, "the secret was encrypted with key %s, which is not loaded (set "
                      "master_keys_old to decrypt with an earlier key)", key_id ? key_id : "?");
    return -1;
  }
  if (blob_len < 1 + NONCE_LEN + TAG_LEN || blob[0] != VERSION) {
    sb_error_set(err, "not an encrypted secret");
    return -1;
  }
  size_t n_ct = blob_len - 1 - NONCE_LEN - TAG_LEN;
  char *out = sb_xmalloc(n_ct + 1);
  int n = 0, rc = -1;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx || EVP_DecryptInit_ex(ctx, aes_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
      EVP_DecryptInit_ex(ctx, NULL, NULL, k->bytes, blob + 1) != 1 ||
      EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)k->id, SB_KEY_ID_LEN) != 1 ||
      EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)context, (int)strlen(context)) != 1 ||
      EVP_DecryptUpdate(ctx, (unsigned char *)out, &n, blob + 1 + NONCE_LEN, (int)n_ct) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                          (void *)(blob + 1 + NONCE_LEN + n_ct)) != 1 ||
      EVP_DecryptFinal_ex(ctx, (unsigned char *)out + n, &n) != 1) {
    sb_error_set(err, "cannot decrypt the secret: wrong key or context, or it was altered");
    explicit_bzero(out, n_ct + 1);
    goto done;
  }
  out[n_ct] = '\0';
  *plain = out;
  if (len) *len = n_ct;
  out = NULL;
  rc = 0;
done:
  EVP_CIPHER_CTX_free(ctx);
  free(out);
  return rc;
}

char *sb_secret_bytea_param(const unsigned char *blob, size_t len) {
  char *out = sb_xmalloc(2 * len + 3);
  out[0] = '\\';
  out[1] = 'x';
  sb_hex_encode(blob, len, out + 2);
  return out;
}

/*
 * secrets.h: secrets at rest (tenant passwords, server admin passwords) encrypted with
 * AES-256-GCM under a master key.
 *
 * The master key is 32 bytes, given as 64 hex digits in SOLOBASE_MASTER_KEY or in a
 * file (master_key_file; the default data_dir/master.key is created, mode 0600, on
 * first use). Each ciphertext records the id of the key that made it (a hash of the
 * key, stored beside it as secret_key_id), so keys can rotate: earlier keys listed in
 * master_keys_old still decrypt, and `solobase secrets rotate` re-encrypts everything
 * under the current one. A ciphertext is bound to a context string (say
 * "instances.database_password_enc:<instance id>"), so one row's secret cannot be
 * pasted into another row.
 *
 * Blob: 0x01 | 12-byte random nonce | ciphertext | 16-byte tag.
 */
#ifndef SB_SECRETS_H
#define SB_SECRETS_H

#include <stddef.h>

#include "error.h"

#define SB_KEY_ID_LEN 16

typedef struct sb_keyring sb_keyring_t;

/* Loads the current and old keys from the settings (creating the default key file on
 * first use). */
sb_keyring_t *sb_keyring_load(sb_error_t *err);
/* A keyring from explicit hex keys (tests, rotation tools); old may be NULL. */
sb_keyring_t *sb_keyring_from_hex(const char *current, const char *old, sb_error_t *err);
void sb_keyring_free(sb_keyring_t *kr);
const char *sb_keyring_current_id(const sb_keyring_t *kr);

/* Encrypts; *blob (malloc'd, caller frees) gets the blob, key_id the current key's
 * id (SB_KEY_ID_LEN + 1 bytes). */
int sb_secret_encrypt(const sb_keyring_t *kr, const char *context, const void *plain,
                      size_t len, unsigned char **blob, size_t *blob_len, char *key_id,
                      sb_error_t *err);
/* Decrypts with the key named key_id; *plain is malloc'd and NUL-terminated (caller
 * frees, ideally after explicit_bzero). Fails on a wrong key, context or tampering. */
int sb_secret_decrypt(const sb_keyring_t *kr, const char *context, const char *key_id,
                      const unsigned char *blob, size_t blob_len, char **plain, size_t *len,
                      sb_error_t *err);

/* The blob as a bytea parameter ("\x..." hex); caller frees. */
char *sb_secret_bytea_param(const unsigned char *blob, size_t len);

#endif

/*
 * migrate.h: applying schema/NNN_*.sql and seeds/NNN_*.sql to the management database.
 *
 * Migrations are applied in the order of their number (NNN_name.sql), each in its own
 * transaction, and recorded with name and sha256 in schema_migrations. A file that was
 * applied and has changed since, a recorded file that disappeared, or a new file that
 * sorts before an applied one is refused: history is append-only. Two migrators on one
 * database serialise on an advisory lock, so the second finds nothing to do. Seeds are
 * idempotent files run each time `db seed` is asked, after all migrations are applied.
 */
#ifndef SB_MIGRATE_H
#define SB_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>

#include "db.h"
#include "error.h"

typedef struct sb_migration {
  char *name;
  char *path;          /* NULL when recorded but missing on disk */
  char sha256[65];     /* of the file on disk */
  bool applied;
  char applied_sha256[65];
  char applied_at[64];
} sb_migration_t;

typedef struct sb_migration_list {
  sb_migration_t *items;
  size_t n;
} sb_migration_list_t;

/* Lists the *.sql files of dir in order; NULL entries never appear. */
int sb_migration_scan(const char *dir, sb_migration_list_t *out, sb_error_t *err);
/* Scans dir and marks what schema_migrations records (table may not exist yet). */
int sb_migrate_status(sb_db_t *db, const char *dir, sb_migration_list_t *out, sb_error_t *err);
/* Applies pending migrations; *applied counts them. Refuses changed history. */
int sb_migrate_apply(sb_db_t *db, const char *dir, int *applied, sb_error_t *err);
/* Number of pending migrations, after checking history; -1 on error. */
int sb_migrate_pending(sb_db_t *db, const char *dir, sb_error_t *err);
/* Runs every seed file in order, each in its own transaction. */
int sb_seed_apply(sb_db_t *db, const char *schema_dir, const char *seeds_dir, int *files,
                  sb_error_t *err);
void sb_migration_list_free(sb_migration_list_t *list);

#endif

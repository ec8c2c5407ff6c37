/*
 * migrate.c: ordered, recorded, checksummed migrations and seeds (see migrate.h).
 */
#include "migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "locks.h"
#include "log.h"
#include "util.h"

static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name text PRIMARY KEY,"
    " sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),"
    " applied_at timestamptz NOT NULL DEFAULT now(),"
    " duration_ms integer NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),"
    " applied_by text NOT NULL DEFAULT current_user)";

/* NNN_name.sql: digits, an underscore, then a name. */
static bool valid_name(const char *name) {
  const char *p = name;
  while (isdigit((unsigned char)*p)) p++;
  if (p - name < 3 || *p != '_') return false;
  size_t len = strlen(name);
  return len > 4 && strcmp(name + len - 4, ".sql") == 0;
}

/* Order by the leading number (so 1000_x follows 999_y), then by name. */
static int cmp_names(const char *a, const char *b) {
  unsigned long long na = strtoull(a, NULL, 10), nb = strtoull(b, NULL, 10);
  if (na != nb) return na < nb ? -1 : 1;
  return strcmp(a, b);
}

static int cmp_migration(const void *a, const void *b) {
  return cmp_names(((const sb_migration_t *)a)->name, ((const sb_migration_t *)b)->name);
}

void sb_migration_list_free(sb_migration_list_t *list) {
  for (size_t i = 0; i < list->n; i++) {
    free(list->items[i].name);
    free(list->items[i].path);
  }
  free(list->items);
  list->items = NULL;
  list->n = 0;
}

static sb_migration_t *list_add(sb_migration_list_t *list, const char *name) {
  list->items = sb_xrealloc(list->items, (list->n + 1) * sizeof *list->items);
  sb_migration_t *m = &list->items[list->n++];
  memset(m, 0, sizeof *m);
  m->name = sb_xstrdup(name);
  return m;
}

int sb_migration_scan(const char *dir, sb_migration_list_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  DIR *d = opendir(dir);
  if (!d) {
    sb_error_set(err, "cannot open directory %s", dir);
    return -1;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0) continue;
    if (!valid_name(e->d_name)) {
      sb_error_set(err, "%s/%s: name it NNN_name.sql (three or more digits first)", dir,
                   e->d_name);
      closedir(d);
      sb_migration_list_free(out);
      return -1;
    }
    sb_migration_t *m = list_add(out, e->d_name);
    m->path = sb_path_join(dir, e->d_name);
    size_t flen = 0;
    char *text = sb_read_file(m->path, &flen, err);
    if (!text) {
      closedir(d);
      sb_migration_list_free(out);
      return -1;
    }
    sb_sha256_hex(text, flen, m->sha256);
    free(text);
  }
  closedir(d);
  qsort(out->items, out->n, sizeof *out->items, cmp_migration);
  return 0;
}

static sb_migration_t *list_find(sb_migration_list_t *list, const char *name) {
  for (size_t i = 0; i < list->n; i++)
    if (strcmp(list->items[i].name, name) == 0) return &list->items[i];
  return NULL;
}

/* Merges what schema_migrations records into list (recorded-but-missing files are
 * added with path NULL). */
static int load_applied(sb_db_t *db, sb_migration_list_t *list, sb_error_t *err) {
  PGresult *res = sb_db_query(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0,
                              NULL, err);
  if (!res) return -1;
  bool exists = PQgetvalue(res, 0, 0)[0] == 't';
  PQclear(res);
  if (!exists) return 0;
  res = sb_db_query(db,
                    "SELECT name, sha256, to_char(applied_at AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD HH24:MI:SS') || 'Z' FROM schema_migrations ORDER BY name",
                    0, NULL, err);
  if (!res) return -1;
  for (int i = 0; i < PQntuples(res); i++) {
    const char *name = PQgetvalue(res, i, 0);
    sb_migration_t *m = list_find(list, name);
    if (!m) m = list_add(list, name);
    m->applied = true;
    snprintf(m->applied_sha256, sizeof m->applied_sha256, "%s", PQgetvalue(res, i, 1));
    snprintf(m->applied_at, sizeof m->applied_at, "%s", PQgetvalue(res, i, 2));
  }
  PQclear(res);
  qsort(list->items, list->n, sizeof *list->items, cmp_migration);
  return 0;
}

int sb_migrate_status(sb_db_t *db, const char *dir, sb_migration_list_t *out, sb_error_t *err) {
  if (sb_migration_scan(dir, out, err) != 0) return -1;
  if (load_applied(db, out, err) != 0) {
    sb_migration_list_free(out);
    return -1;
  }
  return 0;
}

/* History is append-only: refuses edits, deletions and insertions before the end. */
static int check_history(const char *dir, const sb_migration_list_t *list, sb_error_t *err) {
  const char *last_applied = NULL;
  for (size_t i = 0; i < list->n; i++)
    if (list->items[i].applied) last_applied = list->items[i].name;
  for (size_t i = 0; i < list->n; i++) {
    const sb_migration_t *m = &list->items[i];
    if (m->applied && !m->path) {
      sb_error_set(err, "migration %s was applied but %s/%s is gone; restore the file", m->name,
                   dir, m->name);
      return -1;
    }
    if (m->applied && strcmp(m->sha256, m->applied_sha256) != 0) {
      sb_error_set(err,
                   "%s/%s changed after it was applied (sha256 was %.12s, is now %.12s); "
                   "restore it and put the change in a new numbered file",
                   dir, m->name, m->applied_sha256, m->sha256);
      return -1;
    }
    if (!m->applied && last_applied && cmp_names(m->name, last_applied) < 0) {
      sb_error_set(err, "%s/%s is not applied but sorts before the applied %s; give it a "
                        "number after the last applied migration",
                   dir, m->name, last_applied);
      return -1;
    }
  }
  return 0;
}

int sb_migrate_pending(sb_db_t *db, const char *dir, sb_error_t *err) {
  sb_migration_list_t list;
  if (sb_migrate_status(db, dir, &list, err) != 0) return -1;
  int pending = -1;
  if (check_history(dir, &list, err) == 0) {
    pending = 0;
    for (size_t i = 0; i < list.n; i++) pending += !list.items[i].applied;
  }
  sb_migration_list_free(&list);
  return pending;
}

static int take_lock(sb_db_t *db, sb_error_t *err) {
  const char *key[] = {SB_LOCK_MIGRATE};
  PGresult *res = sb_db_query(db, "SELECT pg_try_advisory_lock($1::bigint)", 1, key, err);
  if (!res) return -1;
  bool got = PQgetvalue(res, 0, 0)[0] == 't';
  PQclear(res);
  if (got) return 0;
  sb_info("migrate", "another migration is running on this database; waiting for it");
  return sb_db_exec_params(db, "SELECT pg_advisory_lock($1::bigint)", 1, key, err);
}

static void release_lock(sb_db_t *db) {
  const char *key[] = {SB_LOCK_MIGRATE};
  sb_db_exec_params(db, "SELECT pg_advisory_unlock($1::bigint)", 1, key, NULL);
}

static int apply_one(sb_db_t *db, const sb_migration_t *m, sb_error_t *err) {
  char *sql = sb_read_file(m->path, NULL, err);
  if (!sql) return -1;
  uint64_t t0 = sb_now_ns();
  int rc = -1;
  if (sb_db_begin(db, err) != 0) goto done;
  if (sb_db_exec_script(db, sql, err) != 0) {
    sb_error_prefix(err, "%s", m->path);
    sb_db_rollback(db, NULL);
    goto done;
  }
  /* The file is re-hashed as read here, so what is recorded is what ran. */
  char sha[65], ms[32];
  sb_sha256_hex(sql, strlen(sql), sha);
  snprintf(ms, sizeof ms, "%llu", (unsigned long long)((sb_now_ns() - t0) / 1000000));
  const char *params[] = {m->name, sha, ms};
  if (sb_db_exec_params(db,
                        "INSERT INTO schema_migrations (name, sha256, duration_ms) "
                        "VALUES ($1, $2, $3)",
                        3, params, err) != 0 ||
      sb_db_commit(db, err) != 0) {
    sb_db_rollback(db, NULL);
    goto done;
  }
  sb_info("migrate", "applied %s in %s ms", m->name, ms);
  rc = 0;
done:
  free(sql);
  return rc;
}

int sb_migrate_apply(sb_db_t *db, const char *dir, int *applied, sb_error_t *err) {
  *applied = 0;
  if (take_lock(db, err) != 0) return -1;
  int rc = -1;
  sb_migration_list_t list = {0};
  if (sb_db_exec_params(db, create_table_sql, 0, NULL, err) != 0) goto done;
  if (sb_migrate_status(db, dir, &list, err) != 0) goto done;
  if (check_history(dir, &list, err) != 0) goto done;
  for (size_t i = 0; i < list.n; i++) {
    if (list.items[i].applied) continue;
    if (apply_one(db, &list.items[i], err) != 0) goto done;
    (*applied)++;
  }
  rc = 0;
done:
  sb_migration_list_free(&list);
  release_lock(db);
  return rc;
}

int sb_seed_apply(sb_db_t *db, const char *schema_dir, const char *seeds_dir, int *files,
                  sb_error_t *err) {
  *files = 0;
  int pending = sb_migrate_pending(db, schema_dir, err);
  if (pending < 0) return -1;
  if (pending > 0) {
    sb_error_set(err, "%d migration%s not applied yet; run `solobase db migrate` first", pending,
                 pending == 1 ? " is" : "s are");
    return -1;
  }
  sb_migration_list_t list;
  if (sb_migration_scan(seeds_dir, &list, err) != 0) return -1;
  int rc = 0;
  for (size_t i = 0; i < list.n && rc == 0; i++) {
    char *sql = sb_read_file(list.items[i].path, NULL, err);
    rc = -1;
    if (!sql) break;
    if (sb_db_begin(db, err) == 0) {
      if (sb_db_exec_script(db, sql, err) == 0 && sb_db_commit(db, err) == 0) {
        rc = 0;
        (*files)++;
        sb_info("seed", "applied %s", list.items[i].name);
      } else {
        sb_error_prefix(err, "%s", list.items[i].path);
        if (db->tx_depth) sb_db_rollback(db, NULL);
      }
    }
    free(sql);
  }
  sb_migration_list_free(&list);
  return rc;
}

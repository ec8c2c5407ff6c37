/*
 * mgmtdb.c: the management database, embedded or from DATABASE_URL (see mgmtdb.h).
 */
#include "mgmtdb.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define EMBEDDED_SUPERUSER "solobase"

/* Settings of the embedded cluster beyond PostgreSQL's defaults: enough connections for
 * workers, the HTTP pool, scripts and a REPL or two per engine. */
static const char *const embedded_conf[] = {
    "max_connections = 300",
    "shared_buffers = 128MB",
    NULL,
};

static int ensure_data_dir(sb_error_t *err) {
  const char *dir = sb_config()->data_dir;
  if (sb_mkdir_p(dir, 0700, err) != 0) return -1;
  /* Others may search (not list) it, so the postgres user reaches its clusters. */
  if (geteuid() == 0) chmod(dir, 0711);
  return 0;
}

char *sb_cluster_base_dir(sb_error_t *err) {
  const char *data_dir = sb_config()->data_dir;
  if (ensure_data_dir(err) != 0) return NULL;
  char *record = sb_path_join(data_dir, "cluster-base");
  char *base = sb_read_file(record, NULL, NULL);
  if (base) {
    base[strcspn(base, "\n")] = '\0';
    free(record);
    return base;
  }
  sb_runas_t as;
  if (sb_runas_postgres(&as, err) != 0) {
    free(record);
    return NULL;
  }
  if (sb_proc_can_access(&as, data_dir, false)) {
    base = sb_path_join(data_dir, "clusters");
  } else {
    char hash[65];
    sb_sha256_hex(data_dir, strlen(data_dir), hash);
    hash[16] = '\0';
    base = sb_xasprintf("/var/lib/solobase/%s/clusters", hash);
    sb_info("mgmtdb", "user %s cannot reach %s; keeping PostgreSQL clusters in %s", as.name,
            data_dir, base);
  }
  if (sb_mkdir_p(base, 0711, err) != 0) {
    free(base);
    free(record);
    return NULL;
  }
  char *line = sb_xasprintf("%s\n", base);
  int rc = sb_write_file_atomic(record, line, strlen(line), 0600, err);
  free(line);
  free(record);
  if (rc != 0) {
    free(base);
    return NULL;
  }
  return base;
}

/* data_dir/embedded-pg holds "port=N" and "password=..." (mode 0600). */
typedef struct {
  int port;
  char password[64];
} embedded_state_t;

static int read_state(const char *path, embedded_state_t *st) {
  char *text = sb_read_file(path, NULL, NULL);
  if (!text) return -1;
  memset(st, 0, sizeof *st);
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (strncmp(line, "port=", 5) == 0) st->port = atoi(line + 5);
    else if (strncmp(line, "password=", 9) == 0)
      snprintf(st->password, sizeof st->password, "%s", line + 9);
  }
  explicit_bzero(text, strlen(text));
  free(text);
  return st->password[0] ? 0 : -1;
}

static int write_state(const char *path, const embedded_state_t *st, sb_error_t *err) {
  char *text = sb_xasprintf("port=%d\npassword=%s\n", st->port, st->password);
  int rc = sb_write_file_atomic(path, text, strlen(text), 0600, err);
  explicit_bzero(text, strlen(text));
  free(text);
  return rc;
}

static sb_pgcluster_t *open_cluster(embedded_state_t *st, char **state_path, sb_error_t *err) {
  char *base = sb_cluster_base_dir(err);
  if (!base) return NULL;
  char *root = sb_path_join(base, "embedded");
  free(base);
  *state_path = sb_path_join(sb_config()->data_dir, "embedded-pg");
  sb_pgcluster_t *c = sb_pgcluster_new(root, EMBEDDED_SUPERUSER, st->password, st->port, err);
  free(root);
  return c;
}

sb_pgcluster_t *sb_embedded_open(bool *missing, sb_error_t *err) {
  *missing = false;
  if (sb_config()->database_url) {
    sb_error_set(err, "DATABASE_URL is set: the management database is not the embedded one");
    return NULL;
  }
  char *path = sb_path_join(sb_config()->data_dir, "embedded-pg");
  embedded_state_t st;
  int rc = read_state(path, &st);
  free(path);
  if (rc != 0) {
    *missing = true;
    sb_error_set(err, "the embedded cluster under %s was never initialised",
                 sb_config()->data_dir);
    return NULL;
  }
  char *state_path = NULL;
  sb_pgcluster_t *c = open_cluster(&st, &state_path, err);
  free(state_path);
  explicit_bzero(&st, sizeof st);
  return c;
}

/* Serialises first-use initialisation between concurrent solobase processes. */
static int lock_data_dir(sb_error_t *err) {
  char *path = sb_path_join(sb_config()->data_dir, ".embedded.lock");
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    sb_error_set(err, "cannot open %s: %s", path, strerror(errno));
    free(path);
    return -1;
  }
  free(path);
  while (flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      sb_error_set(err, "cannot lock the data directory: %s", strerror(errno));
      close(fd);
      return -1;
    }
  }
  return fd;
}

/* Initialises and starts the embedded cluster as needed; returns its URL. */
static char *embedded_ensure(sb_error_t *err) {
  if (ensure_data_dir(err) != 0) return NULL;
  int lock = lock_data_dir(err);
  if (lock < 0) return NULL;
  char *url = NULL, *state_path = NULL;
  sb_pgcluster_t *c = NULL;
  embedded_state_t st = {0};
  char *path = sb_path_join(sb_config()->data_dir, "embedded-pg");
  bool fresh = read_state(path, &st) != 0;
  free(path);
  if (fresh && sb_random_token(st.password, 32, err) != 0) goto done;
  c = open_cluster(&st, &state_path, err);
  if (!c) goto done;
  /* The database is checked for only when the cluster was just made or started: on
   * every other call it exists, and the check would cost each command a connection. */
  bool check_db = fresh;
  if (!sb_pgcluster_initialized(c)) {
    check_db = true;
    sb_info("mgmtdb", "initialising the embedded PostgreSQL cluster in %s", c->root);
    if (sb_pgcluster_init(c, embedded_conf, false, err) != 0) goto done;
  }
  if (!sb_pgcluster_running(c)) {
    check_db = true;
    if (sb_pgcluster_start(c, err) != 0) goto done;
    sb_info("mgmtdb", "embedded PostgreSQL listening on 127.0.0.1:%d", c->port);
  }
  if (fresh || st.port != c->port) {
    st.port = c->port;
    if (write_state(state_path, &st, err) != 0) goto done;
  }
  url = sb_pgcluster_url(c, sb_config()->database_name);
  if (check_db && sb_mgmtdb_create_database(url, NULL, err) != 0) {
    free(url);
    url = NULL;
  }
done:
  explicit_bzero(&st, sizeof st);
  sb_pgcluster_free(c);
  free(state_path);
  close(lock);
  return url;
}

char *sb_mgmtdb_url(sb_error_t *err) {
  if (sb_config()->database_url) return sb_xstrdup(sb_config()->database_url);
  return embedded_ensure(err);
}

sb_db_t *sb_mgmtdb_connect(const char *application_name, sb_error_t *err) {
  char *url = sb_mgmtdb_url(err);
  if (!url) return NULL;
  sb_db_t *db = sb_db_connect(url, NULL, application_name, err);
  explicit_bzero(url, strlen(url));
  free(url);
  return db;
}

int sb_mgmtdb_create_database(const char *conninfo, bool *created, sb_error_t *err) {
  if (created) *created = false;
  char *name = sb_db_conninfo_dbname(conninfo, err);
  if (!name) return -1;
  if (!*name) {
    sb_error_set(err, "the database URL names no database");
    free(name);
    return -1;
  }
  int rc = -1;
  sb_db_t *db = sb_db_connect(conninfo, "postgres", "solobase db init", err);
  if (!db) goto done;
  const char *params[] = {name};
  PGresult *res = sb_db_query(db, "SELECT 1 FROM pg_database WHERE datname = $1", 1, params, err);
  if (!res) goto done;
  bool exists = PQntuples(res) > 0;
  PQclear(res);
  if (!exists) {
    /* An identifier cannot be a parameter; libpq quotes it. */
    char *ident = PQescapeIdentifier(db->conn, name, strlen(name));
    char *sql = sb_xasprintf("CREATE DATABASE %s", ident);
    PQfreemem(ident);
    int r = sb_db_exec_params(db, sql, 0, NULL, err);
    free(sql);
    /* Lost a race with another `db init`: 42P04 if it had committed, 23505 (on
     * pg_database's unique name index) if both were creating at once. Both are fine. */
    if (r != 0 && strcmp(err->sqlstate, "42P04") != 0 && strcmp(err->sqlstate, "23505") != 0)
      goto done;
    if (r == 0 && created) *created = true;
    if (r == 0) sb_info("mgmtdb", "created database %s", name);
  }
  rc = 0;
done:
  sb_db_free(db);
  free(name);
  return rc;
}

int sb_embedded_stop(sb_error_t *err) {
  bool missing = false;
  sb_pgcluster_t *c = sb_embedded_open(&missing, err);
  if (!c) return missing ? 0 : -1;
  int rc = sb_pgcluster_stop(c, err);
  sb_pgcluster_free(c);
  return rc;
}

/*
 * fleet_local.c: the `local` fleet driver (see fleet.h, docs/fleet.md).
 *
 * A server is a PostgreSQL 15 cluster under base_dir/servers/NAME/ that this engine
 * initialises and runs through pgcluster.c (loopback only, scram-sha-256, run as the
 * `postgres` user when we are root). A shared server also gets a PgBouncer in front of
 * it, in transaction pooling mode, with a `*` fallback database so a new tenant needs no
 * configuration change, only a line in PgBouncer's auth file. That file is regenerated
 * from pg_authid (the SCRAM verifiers of the roles that may log in) after every change
 * to a role, and PgBouncer is told to re-read it on its admin console, whose RELOAD
 * returns only once the file is loaded. Tenant passwords therefore exist only in this
 * process's memory: the verifier is computed client-side by libpq and nothing on disk
 * holds a plaintext password.
 *
 * Every operation can be repeated after a crash: what exists is completed, what is gone
 * is fine. Operations that start, stop or remove a server's processes or rewrite
 * PgBouncer's files hold a per-server lock file (servers/NAME.lock), so two engine
 * processes on one machine never interleave them; SQL changes need no lock, since
 * PostgreSQL serialises them and the auth file is always rebuilt from its current state.
 */
#include "fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "pgcluster.h"
#include "proc.h"
#include "util.h"

#define LOCAL_HOST "127.0.0.1"
#define APP_NAME "solobase-fleet"
/* How long a terminated session, a starting or a stopping PgBouncer may take. */
#define TERMINATE_WAIT_MS "5000"
#define BOUNCER_WAIT_MS 10000
/* PgBouncer's own limit on client connections across all databases (its default, 100,
 * would let a single tenant take every slot of a shared server). */
#define BOUNCER_MAX_CLIENT_CONN 1000

/* What every tenant role is: able to log in and nothing more. */
#define TENANT_ROLE_ATTRS \
  "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"

typedef struct local_state {
  char *servers_dir; /* base_dir/servers */
  char *bindir;      /* PostgreSQL 15 programs (initdb, pg_ctl, pg_dump) */
  sb_runas_t as;     /* who runs PostgreSQL and PgBouncer */
} local_state_t;

/* Where one server's files are. */
typedef struct server_paths {
  char *root;     /* servers/NAME: the cluster root (data/, server.log) */
  char *data;     /* root/data */
  char *created;  /* root/created: initdb and its settings completed */
  char *bouncer;  /* root/pgbouncer */
  char *ini;      /* root/pgbouncer/pgbouncer.ini */
  char *userlist; /* root/pgbouncer/userlist.txt */
  char *pidfile;  /* root/pgbouncer/pgbouncer.pid */
  char *logfile;  /* root/pgbouncer/pgbouncer.log */
  char *lock;     /* servers/NAME.lock: outside root, so destroy can hold it */
} server_paths_t;

/* ---- names, paths, files ---------------------------------------------------------- */

#define LOWER "abcdefghijklmnopqrstuvwxyz"
#define UPPER "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#define DIGITS "0123456789"

/* True when s is one character of `first` followed only by characters of `rest`, at most
 * max in all. (No regex: a locale must not change what [a-z] means here.) */
static bool name_ok(const char *s, const char *first, const char *rest, size_t max) {
  if (!s || !*s || !strchr(first, *s)) return false;
  size_t n = strlen(s);
  return n <= max && strspn(s + 1, rest) == n - 1;
}

/* ^[a-z0-9][a-z0-9-]{0,62}$: the directory of a server. */
static bool valid_server_name(const char *s) {
  return name_ok(s, LOWER DIGITS, LOWER DIGITS "-", 63);
}

/* ^[a-z_][a-z0-9_]{0,62}$: tenant databases and roles, and the admin role. They are
 * written into SQL, conninfo strings and PgBouncer's files, so only plain lowercase
 * identifiers are accepted. */
static bool valid_ident(const char *s) { return name_ok(s, LOWER "_", LOWER DIGITS "_", 63); }

/* A postgresql.conf setting name, optionally with one dot (extension.setting). */
static bool valid_setting_name(const char *s) {
  char part[128];
  snprintf(part, sizeof part, "%s", s);
  char *dot = strchr(part, '.');
  if (dot) *dot = '\0';
  const char *first = LOWER UPPER "_", *rest = LOWER UPPER DIGITS "_";
  return strlen(s) < sizeof part && name_ok(part, first, rest, sizeof part) &&
         (!dot || name_ok(dot + 1, first, rest, sizeof part));
}

/* Checks what every operation on srv needs; programmer-facing messages. */
static int check_server(const sb_server_t *srv, bool need_admin, sb_error_t *err) {
  if (!srv || !valid_server_name(srv->name)) {
    sb_error_set(err, "invalid server name `%s`: expected [a-z0-9][a-z0-9-]{0,62}",
                 srv ? srv->name : "(null)");
    return -1;
  }
  if (need_admin && !valid_ident(srv->admin_user)) {
    sb_error_set(err, "server %s: invalid admin role `%s`: expected [a-z_][a-z0-9_]{0,62}",
                 srv->name, srv->admin_user);
    return -1;
  }
  if (need_admin && !srv->admin_password[0]) {
    sb_error_set(err, "server %s: the admin password is empty", srv->name);
    return -1;
  }
  return 0;
}

static int check_ident(const sb_server_t *srv, const char *what, const char *s,
                       sb_error_t *err) {
  if (valid_ident(s)) return 0;
  sb_error_set(err, "server %s: invalid %s name `%s`: expected [a-z_][a-z0-9_]{0,62}",
               srv->name, what, s ? s : "(null)");
  return -1;
}

static void paths_init(server_paths_t *p, const local_state_t *st, const char *name) {
  p->root = sb_path_join(st->servers_dir, name);
  p->data = sb_path_join(p->root, "data");
  p->created = sb_path_join(p->root, "created");
  p->bouncer = sb_path_join(p->root, "pgbouncer");
  p->ini = sb_path_join(p->bouncer, "pgbouncer.ini");
  p->userlist = sb_path_join(p->bouncer, "userlist.txt");
  p->pidfile = sb_path_join(p->bouncer, "pgbouncer.pid");
  p->logfile = sb_path_join(p->bouncer, "pgbouncer.log");
  p->lock = sb_xasprintf("%s.lock", p->root);
}

static void paths_free(server_paths_t *p) {
  free(p->root);
  free(p->data);
  free(p->created);
  free(p->bouncer);
  free(p->ini);
  free(p->userlist);
  free(p->pidfile);
  free(p->logfile);
  free(p->lock);
}

static void wipe_free(char *s) {
  if (!s) return;
  explicit_bzero(s, strlen(s));
  free(s);
}

/* Exclusive lock on the server's lock file; returns the descriptor to pass to unlock. */
static int lock_server(const server_paths_t *p, sb_error_t *err) {
  int fd = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    sb_error_set(err, "cannot open %s: %s", p->lock, strerror(errno));
    return -1;
  }
  while (flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    sb_error_set(err, "cannot lock %s: %s", p->lock, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

static void unlock_server(int fd) {
  if (fd >= 0) close(fd);
}

/* Writes a file that only the server's user may read, owned by it before it appears
 * under its name, so PgBouncer never sees a half-written or unreadable file. */
static int write_private_file(const local_state_t *st, const char *path, const char *text,
                              sb_error_t *err) {
  char *tmp = sb_xasprintf("%s.tmp", path);
  int rc = -1;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    sb_error_set(err, "cannot create %s: %s", tmp, strerror(errno));
    goto done;
  }
  if (fchmod(fd, 0600) != 0 ||
      (st->as.active && fchown(fd, st->as.uid, st->as.gid) != 0)) {
    sb_error_set(err, "cannot give %s to user %s: %s", tmp, st->as.name, strerror(errno));
    goto done;
  }
  for (size_t off = 0, len = strlen(text); off < len;) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      sb_error_set(err, "cannot write %s: %s", tmp, strerror(errno));
      goto done;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) {
    sb_error_set(err, "cannot write %s: %s", tmp, strerror(errno));
    goto done;
  }
  close(fd);
  fd = -1;
  if (rename(tmp, path) != 0) {
    sb_error_set(err, "cannot rename %s: %s", tmp, strerror(errno));
    goto done;
  }
  rc = 0;
done:
  if (fd >= 0) close(fd);
  if (rc != 0) unlink(tmp);
  free(tmp);
  return rc;
}

/* A directory that belongs to the server's user, mode 0700. */
static int make_private_dir(const local_state_t *st, const char *path, sb_error_t *err) {
  if (sb_mkdir_p(path, 0700, err) != 0) return -1;
  if (chmod(path, 0700) != 0) {
    sb_error_set(err, "cannot restrict %s: %s", path, strerror(errno));
    return -1;
  }
  return sb_proc_chown(&st->as, path, err);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -rf path; a missing path is success. */
static int remove_tree(const char *path, sb_error_t *err) {
  struct stat sb;
  if (lstat(path, &sb) != 0 && errno == ENOENT) return 0;
  if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
    sb_error_set(err, "cannot remove %s: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

/* The last part of a log file, for an error message. */
static void append_log_tail(const char *path, sb_error_t *err) {
  size_t len = 0;
  char *text = sb_read_file(path, &len, NULL);
  if (!text) return;
  const char *tail = len > 400 ? text + len - 400 : text;
  char msg[sizeof err->msg];
  snprintf(msg, sizeof msg, "%s; %s ends: %s", err->msg, path, tail);
  sb_error_set(err, "%s", msg);
  free(text);
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---- settings --------------------------------------------------------------------- */

static void free_lines(char **lines) {
  if (!lines) return;
  for (char **l = lines; *l; l++) free(*l);
  free(lines);
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
  return s;
}

/* fleet_server_settings ("name=value;...") as postgresql.conf lines `name = 'value'`.
 * Values are always quoted (PostgreSQL accepts quoted numbers, sizes and booleans), with
 * ' and \ escaped, so no value can end the line or add another setting. NULL-terminated;
 * free with free_lines. */
static char **server_conf_lines(const char *settings, sb_error_t *err) {
  size_t cap = 4, n = 0;
  char **lines = sb_xcalloc(cap, sizeof *lines);
  char *copy = sb_xstrdup(settings ? settings : "");
  char *save = NULL;
  for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
    item = trim(item);
    if (!*item) continue;
    char *eq = strchr(item, '=');
    if (!eq) {
      sb_error_set(err, "fleet_server_settings: `%s` is not name=value", item);
      goto fail;
    }
    *eq = '\0';
    char *name = trim(item), *value = trim(eq + 1);
    if (!valid_setting_name(name)) {
      sb_error_set(err, "fleet_server_settings: `%s` is not a PostgreSQL setting name", name);
      goto fail;
    }
    size_t vlen = strlen(value);
    char *quoted = sb_xmalloc(2 * vlen + 3), *q = quoted;
    *q++ = '\'';
    for (const char *v = value; *v; v++) {
      if ((unsigned char)*v < 0x20 || *v == 0x7f) {
        sb_error_set(err, "fleet_server_settings: the value of %s holds a control character",
                     name);
        free(quoted);
        goto fail;
      }
      if (*v == '\'' || *v == '\\') *q++ = *v;
      *q++ = *v;
    }
    *q++ = '\'';
    *q = '\0';
    if (n + 2 > cap) lines = sb_xrealloc(lines, (cap *= 2) * sizeof *lines);
    lines[n++] = sb_xasprintf("%s = %s", name, quoted);
    lines[n] = NULL;
    free(quoted);
  }
  free(copy);
  return lines;
fail:
  free(copy);
  free_lines(lines);
  return NULL;
}

/* ---- connections ------------------------------------------------------------------ */

/* A conninfo value in single quotes with ' and \ escaped, as libpq reads it. */
static char *conninfo_quote(const char *v) {
  char *out = sb_xmalloc(2 * strlen(v) + 3), *o = out;
  *o++ = '\'';
  for (; *v; v++) {
    if (*v == '\'' || *v == '\\') *o++ = '\\';
    *o++ = *v;
  }
  *o++ = '\'';
  *o = '\0';
  return out;
}

/* Connects as the server's admin to dbname on port (PostgreSQL, or PgBouncer's console
 * with dbname "pgbouncer"). Errors name the server; they never hold the password. */
static sb_db_t *connect_admin(const sb_server_t *srv, int port, const char *dbname,
                              sb_error_t *err) {
  if (port <= 0) {
    sb_error_set(err, "server %s: no port known (was it created?)", srv->name);
    return NULL;
  }
  char *pw = conninfo_quote(srv->admin_password);
  char *conninfo = sb_xasprintf("host=%s port=%d user=%s password=%s", LOCAL_HOST, port,
                                srv->admin_user, pw);
  sb_db_t *db = sb_db_connect(conninfo, dbname, APP_NAME, err);
  wipe_free(conninfo);
  wipe_free(pw);
  if (!db) sb_error_prefix(err, "server %s", srv->name);
  return db;
}

/* Runs one statement (no result needed); the error says what failed, on which server. */
static int run_sql(sb_db_t *db, const sb_server_t *srv, const char *what, const char *sql,
                   int n, const char *const *params, sb_error_t *err) {
  if (sb_db_exec_params(db, sql, n, params, err) == 0) return 0;
  sb_error_prefix(err, "server %s: %s", srv->name, what);
  return -1;
}

/* *found tells whether sql (one $1 parameter) returned a row. */
static int row_exists(sb_db_t *db, const sb_server_t *srv, const char *sql, const char *arg,
                      bool *found, sb_error_t *err) {
  PGresult *res = sb_db_query(db, sql, 1, &arg, err);
  if (!res) {
    sb_error_prefix(err, "server %s", srv->name);
    return -1;
  }
  *found = PQntuples(res) > 0;
  PQclear(res);
  return 0;
}

/* Ends the sessions matching where (SQL over pg_stat_activity with $1 and $2), waiting
 * for each to exit, so a caller can rely on them being gone. */
static int terminate_sessions(sb_db_t *db, const sb_server_t *srv, const char *where,
                              const char *p1, const char *p2, sb_error_t *err) {
  char *sql = sb_xasprintf("SELECT count(pg_terminate_backend(pid, " TERMINATE_WAIT_MS
                           ")) FROM pg_stat_activity WHERE (%s) AND pid <> pg_backend_pid()",
                           where);
  const char *params[] = {p1, p2};
  int rc = run_sql(db, srv, "cannot end sessions", sql, p2 ? 2 : 1, params, err);
  free(sql);
  return rc;
}

/* ---- PgBouncer -------------------------------------------------------------------- */

/* True when pid is a live PgBouncer started with this server's configuration file (a
 * stale pid file may name a reused pid). */
static bool is_our_bouncer(long pid, const server_paths_t *p) {
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/%ld/cmdline", pid);
  size_t len = 0;
  char *cmdline = sb_read_file(proc, &len, NULL);
  if (!cmdline) return false;
  bool ours = memmem(cmdline, len, "pgbouncer", 9) != NULL &&
              memmem(cmdline, len, p->ini, strlen(p->ini)) != NULL;
  free(cmdline);
  return ours;
}

/* The pid of the server's running PgBouncer, or 0. */
static long bouncer_pid(const server_paths_t *p) {
  char *text = sb_read_file(p->pidfile, NULL, NULL);
  if (!text) return 0;
  long pid = strtol(text, NULL, 10);
  free(text);
  return pid > 0 && is_our_bouncer(pid, p) ? pid : 0;
}

/* The ports in the configuration we last wrote: where PgBouncer listens and the
 * PostgreSQL port it forwards to (0 when unknown). */
static void bouncer_config_ports(const server_paths_t *p, int *listen, int *backend) {
  *listen = *backend = 0;
  char *text = sb_read_file(p->ini, NULL, NULL);
  if (!text) return;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    int v;
    if (sscanf(line, "listen_port = %d", &v) == 1) *listen = v;
    if (sscanf(line, "* = host=" LOCAL_HOST " port=%d", &v) == 1) *backend = v;
  }
  free(text);
}

static int bouncer_write_config(const local_state_t *st, const server_paths_t *p,
                                const sb_server_t *srv, int listen, int backend,
                                sb_error_t *err) {
  const sb_config_t *cfg = sb_config();
  char *text = sb_xasprintf(
      "; Written by solobase (core/fleet_local.c) at every start; see docs/fleet.md.\n"
      "[databases]\n"
      "* = host=" LOCAL_HOST " port=%d\n"
      "\n"
      "[pgbouncer]\n"
      "listen_addr = " LOCAL_HOST "\n"
      "listen_port = %d\n"
      "unix_socket_dir =\n"
      "auth_type = scram-sha-256\n"
      "auth_file = %s\n"
      "admin_users = %s\n"
      "pool_mode = transaction\n"
      "default_pool_size = %ld\n"
      "max_db_connections = %ld\n"
      "max_client_conn = %d\n"
      "ignore_startup_parameters = extra_float_digits\n"
      "logfile = %s\n"
      "pidfile = %s\n",
      backend, listen, p->userlist, srv->admin_user, cfg->pgbouncer_pool_size,
      cfg->pgbouncer_max_db_connections, BOUNCER_MAX_CLIENT_CONN, p->logfile, p->pidfile);
  int rc = write_private_file(st, p->ini, text, err);
  free(text);
  return rc;
}

/* Rewrites the auth file from pg_authid: every role that may log in, with its SCRAM
 * verifier (PgBouncer checks clients against it and, the verifiers being identical,
 * logs in to PostgreSQL with the keys the client proved). Suspended (NOLOGIN) and
 * dropped roles thereby leave it. */
static int bouncer_write_userlist(const local_state_t *st, const server_paths_t *p,
                                  sb_db_t *db, const sb_server_t *srv, sb_error_t *err) {
  PGresult *res = sb_db_query(db,
                              "SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin "
                              "AND rolpassword LIKE 'SCRAM-SHA-256$%' ORDER BY rolname",
                              0, NULL, err);
  if (!res) {
    sb_error_prefix(err, "server %s: cannot read the roles for PgBouncer", srv->name);
    return -1;
  }
  size_t cap = 256, len = 0;
  char *text = sb_xmalloc(cap);
  text[0] = '\0';
  for (int i = 0; i < PQntuples(res); i++) {
    for (int col = 0; col < 2; col++) {
      /* "field" with " doubled, as the auth file format asks. */
      const char *v = PQgetvalue(res, i, col);
      size_t need = len + 2 * strlen(v) + 4;
      if (need > cap) {
        char *bigger = sb_xmalloc(cap = 2 * need);
        memcpy(bigger, text, len + 1);
        wipe_free(text);
        text = bigger;
      }
      text[len++] = '"';
      for (; *v; v++) {
        if (*v == '"') text[len++] = '"';
        text[len++] = *v;
      }
      text[len++] = '"';
      text[len++] = col == 0 ? ' ' : '\n';
      text[len] = '\0';
    }
  }
  PQclear(res);
  int rc = write_private_file(st, p->userlist, text, err);
  wipe_free(text);
  return rc;
}

/* Runs one command on PgBouncer's admin console (simple query protocol only). */
static int bouncer_command(sb_db_t *console, const sb_server_t *srv, const char *cmd,
                           sb_error_t *err) {
  if (sb_db_exec_script(console, cmd, err) == 0) return 0;
  sb_error_prefix(err, "server %s: PgBouncer %s", srv->name, cmd);
  return -1;
}

/* Makes the running PgBouncer (if any) load the auth file, then drops every client and
 * server connection of the databases in kill_dbs (NULL-terminated, may be NULL): KILL
 * leaves a database paused, so RESUME follows; a database PgBouncer never saw needs
 * nothing. RELOAD returns once the files are loaded, so the change is in effect. */
static int bouncer_apply(const server_paths_t *p, const sb_server_t *srv,
                         const char *const *kill_dbs, sb_error_t *err) {
  if (!bouncer_pid(p)) return 0; /* it reads the file when it starts */
  int listen, backend;
  bouncer_config_ports(p, &listen, &backend);
  int rc = -1;
  sb_db_t *console = connect_admin(srv, listen, "pgbouncer", err);
  if (!console) {
    sb_error_prefix(err, "PgBouncer console");
    goto done;
  }
  if (bouncer_command(console, srv, "RELOAD", err) != 0) goto done;
  for (; kill_dbs && *kill_dbs; kill_dbs++) {
    char *kill = sb_xasprintf("KILL %s", *kill_dbs);
    char *resume = sb_xasprintf("RESUME %s", *kill_dbs);
    sb_error_t kerr;
    int krc = bouncer_command(console, srv, kill, &kerr);
    if (krc == 0) krc = bouncer_command(console, srv, resume, err);
    else if (strstr(kerr.msg, "no such database")) krc = 0;
    else *err = kerr;
    free(kill);
    free(resume);
    if (krc != 0) goto done;
  }
  rc = 0;
done:
  sb_db_free(console);
  return rc;
}

/* Stops the server's PgBouncer (immediate shutdown) and waits for it to exit. */
static int bouncer_stop(const server_paths_t *p, const sb_server_t *srv, sb_error_t *err) {
  long pid = bouncer_pid(p);
  if (!pid) return 0;
  kill((pid_t)pid, SIGTERM);
  for (int waited = 0; bouncer_pid(p); waited += 100) {
    if (waited == BOUNCER_WAIT_MS) kill((pid_t)pid, SIGKILL);
    if (waited > BOUNCER_WAIT_MS + 2000) {
      sb_error_set(err, "server %s: PgBouncer (pid %ld) does not exit", srv->name, pid);
      return -1;
    }
    sleep_ms(100);
  }
  unlink(p->pidfile); /* left behind after SIGKILL */
  sb_debug("fleet", "server %s: PgBouncer stopped", srv->name);
  return 0;
}

/* Starts PgBouncer on listen (as the server's user, in the background) and waits until
 * it accepts connections. */
static int bouncer_start(const local_state_t *st, const server_paths_t *p,
                         const sb_server_t *srv, int listen, sb_error_t *err) {
  const char *bin = sb_config()->pgbouncer_bin;
  if (!bin || access(bin, X_OK) != 0) {
    sb_error_set(err, "server %s: cannot run PgBouncer at %s (setting pgbouncer_bin): %s",
                 srv->name, bin ? bin : "(unset)", strerror(errno));
    return -1;
  }
  /* PgBouncer refuses to start over a pid file that names a live process. */
  unlink(p->pidfile);
  /* It appends to its log; created here so that names of tenants stay private. */
  int fd = open(p->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 || (st->as.active && fchown(fd, st->as.uid, st->as.gid) != 0)) {
    sb_error_set(err, "server %s: cannot create %s: %s", srv->name, p->logfile,
                 strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  close(fd);
  const char *argv[] = {bin, "-d", p->ini, NULL};
  char *out = NULL;
  int rc = sb_proc_run(argv, &st->as, p->bouncer, &out, err);
  if (rc != 0) {
    if (rc > 0) {
      size_t len = out ? strlen(out) : 0;
      sb_error_set(err, "PgBouncer exited with %d: %s", rc,
                   len > 400 ? out + len - 400 : (out ? out : ""));
    }
    sb_error_prefix(err, "server %s", srv->name);
    append_log_tail(p->logfile, err);
    free(out);
    return -1;
  }
  free(out);
  for (int waited = 0; waited < BOUNCER_WAIT_MS; waited += 50) {
    if (bouncer_pid(p) && sb_tcp_port_in_use(listen)) {
      sb_debug("fleet", "server %s: PgBouncer listens on %s:%d", srv->name, LOCAL_HOST, listen);
      return 0;
    }
    sleep_ms(50);
  }
  sb_error_set(err, "server %s: PgBouncer did not start listening on %s:%d", srv->name,
               LOCAL_HOST, listen);
  append_log_tail(p->logfile, err);
  return -1;
}

/* Makes the server's PgBouncer run in front of PostgreSQL on srv->port, and refreshes
 * its files. A running one that forwards to the right port is kept (its clients stay
 * connected); otherwise it is restarted, on srv->pooler_port (or its last port) when
 * that is free, else on a new one. Sets srv->pooler_port. Called with the server lock
 * held. */
static int bouncer_ensure(const local_state_t *st, const server_paths_t *p, sb_server_t *srv,
                          sb_db_t *db, sb_error_t *err) {
  if (make_private_dir(st, p->bouncer, err) != 0) return -1;
  if (bouncer_write_userlist(st, p, db, srv, err) != 0) return -1;
  int listen, backend;
  bouncer_config_ports(p, &listen, &backend);
  if (bouncer_pid(p) && backend == srv->port && listen > 0 && sb_tcp_port_in_use(listen)) {
    /* Rewritten so changed pool settings take effect on RELOAD; the ports stay. */
    if (bouncer_write_config(st, p, srv, listen, backend, err) != 0) return -1;
    srv->pooler_port = listen;
    return bouncer_apply(p, srv, NULL, err);
  }
  if (bouncer_stop(p, srv, err) != 0) return -1;
  int port = srv->pooler_port > 0 ? srv->pooler_port : listen;
  if (port <= 0 || sb_tcp_port_in_use(port)) {
    port = sb_free_tcp_port(err);
    if (port < 0) return -1;
  }
  if (bouncer_write_config(st, p, srv, port, srv->port, err) != 0) return -1;
  if (bouncer_start(st, p, srv, port, err) != 0) return -1;
  srv->pooler_port = port;
  return 0;
}

/* After a role change: rewrite the auth file, have PgBouncer load it and drop the
 * connections of kill_dbs. No-op for a server without PgBouncer. */
static int bouncer_refresh(const local_state_t *st, const sb_server_t *srv, sb_db_t *db,
                           const char *const *kill_dbs, sb_error_t *err) {
  if (!srv->pooler) return 0;
  server_paths_t p;
  paths_init(&p, st, srv->name);
  int rc = -1;
  int lock = lock_server(&p, err);
  if (lock < 0) goto done;
  if (make_private_dir(st, p.bouncer, err) != 0) goto done;
  if (bouncer_write_userlist(st, &p, db, srv, err) != 0) goto done;
  rc = bouncer_apply(&p, srv, kill_dbs, err);
done:
  unlock_server(lock);
  paths_free(&p);
  return rc;
}

/* ---- servers ---------------------------------------------------------------------- */

/* Creates (when create is true and it is missing or incomplete) and starts the server,
 * locks its templates away from tenants and brings up its PgBouncer. */
static int server_up(sb_fleet_driver_t *d, sb_server_t *srv, bool create, sb_error_t *err) {
  local_state_t *st = d->state;
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, true, err) != 0) return -1;
  /* Bad settings are reported before anything is made. */
  char **lines = server_conf_lines(sb_config()->fleet_server_settings, err);
  if (!lines) {
    sb_error_prefix(err, "server %s", srv->name);
    return -1;
  }
  server_paths_t p;
  paths_init(&p, st, srv->name);
  int rc = -1;
  sb_pgcluster_t *c = NULL;
  sb_db_t *db = NULL;
  int lock = lock_server(&p, err);
  if (lock < 0) goto done;
  c = sb_pgcluster_new(p.root, srv->admin_user, srv->admin_password, srv->port, err);
  if (!c) goto done;
  if (!sb_path_exists(p.created)) {
    if (!create) {
      sb_error_set(err, "server %s was never created (no %s)", srv->name, p.created);
      goto done;
    }
    /* An initdb cut short leaves a directory initdb refuses; nothing of a tenant can be
     * in it yet, since tenants come only after this function succeeded. */
    if (remove_tree(p.data, err) != 0) goto done;
    if (sb_pgcluster_init(c, (const char *const *)lines, false, err) != 0) goto done;
    if (write_private_file(st, p.created, "", err) != 0) goto done;
    sb_info("fleet", "server %s: initialised in %s", srv->name, p.root);
  }
  if (sb_pgcluster_start(c, err) != 0) goto done;
  srv->port = c->port;
  snprintf(srv->host, sizeof srv->host, "%s", LOCAL_HOST);
  db = connect_admin(srv, srv->port, "postgres", err);
  if (!db) goto done;
  /* Every tenant may connect only to its own database: not to the maintenance
   * database, nor to the template every new database is copied from. */
  if (run_sql(db, srv, "cannot restrict the maintenance databases",
              "REVOKE CONNECT, TEMPORARY ON DATABASE postgres, template1 FROM PUBLIC", 0, NULL,
              err) != 0)
    goto done;
  if (srv->pooler) {
    if (bouncer_ensure(st, &p, srv, db, err) != 0) goto done;
  } else {
    if (bouncer_stop(&p, srv, err) != 0) goto done;
    srv->pooler_port = 0;
  }
  sb_info("fleet", "server %s: running on %s:%d%s", srv->name, LOCAL_HOST, srv->port,
          srv->pooler ? " behind PgBouncer" : "");
  rc = 0;
done:
  sb_db_free(db);
  free_lines(lines);
  sb_pgcluster_free(c);
  unlock_server(lock);
  paths_free(&p);
  return rc;
}

static int local_server_create(sb_fleet_driver_t *d, sb_server_t *srv, sb_error_t *err) {
  return server_up(d, srv, true, err);
}

static int local_server_ensure_running(sb_fleet_driver_t *d, sb_server_t *srv,
                                       sb_error_t *err) {
  return server_up(d, srv, false, err);
}

/* Stops PgBouncer, then PostgreSQL; with remove, also deletes the server's files. */
static int server_down(sb_fleet_driver_t *d, const sb_server_t *srv, bool remove,
                       sb_error_t *err) {
  local_state_t *st = d->state;
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, false, err) != 0) return -1;
  server_paths_t p;
  paths_init(&p, st, srv->name);
  int rc = -1;
  sb_pgcluster_t *c = NULL;
  int lock = lock_server(&p, err);
  if (lock < 0) goto done;
  if (bouncer_stop(&p, srv, err) != 0) goto done;
  if (sb_is_dir(p.root)) {
    c = sb_pgcluster_new(p.root, srv->admin_user, srv->admin_password, srv->port, err);
    if (!c) goto done;
    if (sb_pgcluster_stop(c, err) != 0) {
      sb_error_prefix(err, "server %s", srv->name);
      goto done;
    }
  }
  if (remove) {
    if (remove_tree(p.root, err) != 0) goto done;
    unlink(p.lock);
    sb_info("fleet", "server %s: destroyed", srv->name);
  } else {
    sb_info("fleet", "server %s: stopped", srv->name);
  }
  rc = 0;
done:
  sb_pgcluster_free(c);
  unlock_server(lock);
  paths_free(&p);
  return rc;
}

static int local_server_stop(sb_fleet_driver_t *d, const sb_server_t *srv, sb_error_t *err) {
  return server_down(d, srv, false, err);
}

static int local_server_destroy(sb_fleet_driver_t *d, const sb_server_t *srv,
                                sb_error_t *err) {
  return server_down(d, srv, true, err);
}

static int local_server_probe(sb_fleet_driver_t *d, const sb_server_t *srv,
                              sb_server_health_t *out, sb_error_t *err) {
  local_state_t *st = d->state;
  if (!out) {
    sb_error_set(err, "server_probe needs somewhere to put the result");
    return -1;
  }
  memset(out, 0, sizeof *out);
  if (check_server(srv, true, err) != 0) return -1;
  sb_error_t perr;
  sb_db_t *db = NULL;
  PGresult *res = NULL;
  uint64_t t0 = sb_now_ns();
  db = connect_admin(srv, srv->port, "postgres", &perr);
  if (!db) goto bad;
  res = sb_db_query(db, "SELECT 1", 0, NULL, &perr);
  if (!res) goto bad;
  out->latency_ms = (double)(sb_now_ns() - t0) / 1e6;
  PQclear(res);
  res = sb_db_query(db,
                    "SELECT count(*) FILTER (WHERE NOT datistemplate AND datname <> 'postgres'),"
                    " sum(pg_database_size(oid))::bigint FROM pg_database",
                    0, NULL, &perr);
  if (!res) goto bad;
  out->databases = atoi(PQgetvalue(res, 0, 0));
  out->total_bytes = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
  if (srv->pooler) {
    /* Tenants of a shared server reach it through PgBouncer: no PgBouncer, no service. */
    server_paths_t p;
    paths_init(&p, st, srv->name);
    bool up = bouncer_pid(&p) && srv->pooler_port > 0 && sb_tcp_port_in_use(srv->pooler_port);
    paths_free(&p);
    if (!up) {
      sb_error_set(&perr, "server %s: PgBouncer is not running on port %d", srv->name,
                   srv->pooler_port);
      goto bad;
    }
  }
  out->ok = true;
  goto done;
bad:
  out->ok = false;
  snprintf(out->error, sizeof out->error, "%s", perr.msg);
done:
  PQclear(res);
  sb_db_free(db);
  return 0;
}

/* ---- tenants ---------------------------------------------------------------------- */

static int local_database_create(sb_fleet_driver_t *d, const sb_server_t *srv,
                                 const char *dbname, const char *role, const char *password,
                                 sb_error_t *err) {
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, true, err) != 0 || check_ident(srv, "database", dbname, err) != 0 ||
      check_ident(srv, "role", role, err) != 0)
    return -1;
  if (!password || !*password) {
    sb_error_set(err, "server %s: empty password for role %s", srv->name, role);
    return -1;
  }
  int rc = -1;
  char *verifier = NULL, *qrole = NULL, *qdb = NULL, *lit = NULL, *sql = NULL;
  sb_db_t *db = connect_admin(srv, srv->port, "postgres", err);
  if (!db) goto done;
  /* libpq salts and hashes here: the server (and its logs) only ever see the verifier. */
  verifier = PQencryptPasswordConn(db->conn, password, role, "scram-sha-256");
  if (!verifier) {
    sb_error_set(err, "server %s: cannot compute the SCRAM verifier of role %s: %s", srv->name,
                 role, PQerrorMessage(db->conn));
    goto done;
  }
  qrole = PQescapeIdentifier(db->conn, role, strlen(role));
  qdb = PQescapeIdentifier(db->conn, dbname, strlen(dbname));
  lit = PQescapeLiteral(db->conn, verifier, strlen(verifier));
  if (!qrole || !qdb || !lit) {
    sb_error_set(err, "server %s: cannot quote names: %s", srv->name, PQerrorMessage(db->conn));
    goto done;
  }

  bool exists = false;
  if (row_exists(db, srv, "SELECT 1 FROM pg_roles WHERE rolname = $1", role, &exists, err) != 0)
    goto done;
  for (int attempt = 0; attempt < 2; attempt++) {
    wipe_free(sql);
    sql = sb_xasprintf("%s ROLE %s " TENANT_ROLE_ATTRS " CONNECTION LIMIT %ld PASSWORD %s",
                       exists ? "ALTER" : "CREATE", qrole,
                       sb_config()->pgbouncer_max_db_connections, lit);
    if (sb_db_exec_params(db, sql, 0, NULL, err) == 0) break;
    /* Created by a concurrent call since we looked: complete it instead. */
    if (exists || strcmp(err->sqlstate, "42710") != 0) {
      sb_error_prefix(err, "server %s: cannot %s role %s", srv->name,
                      exists ? "alter" : "create", role);
      goto done;
    }
    exists = true;
  }

  if (row_exists(db, srv, "SELECT 1 FROM pg_database WHERE datname = $1", dbname, &exists,
                 err) != 0)
    goto done;
  if (!exists) {
    free(sql);
    sql = sb_xasprintf("CREATE DATABASE %s OWNER %s", qdb, qrole);
    if (sb_db_exec_params(db, sql, 0, NULL, err) != 0) {
      if (strcmp(err->sqlstate, "42P04") != 0) {
        sb_error_prefix(err, "server %s: cannot create database %s", srv->name, dbname);
        goto done;
      }
      exists = true;
    }
  }
  if (exists) {
    free(sql);
    sql = sb_xasprintf("ALTER DATABASE %s OWNER TO %s", qdb, qrole);
    if (run_sql(db, srv, "cannot set the owner of a database", sql, 0, NULL, err) != 0)
      goto done;
  }
  free(sql);
  sql = sb_xasprintf("REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC", qdb);
  if (run_sql(db, srv, "cannot revoke CONNECT from PUBLIC", sql, 0, NULL, err) != 0) goto done;
  free(sql);
  sql = sb_xasprintf("GRANT CONNECT ON DATABASE %s TO %s", qdb, qrole);
  if (run_sql(db, srv, "cannot grant CONNECT", sql, 0, NULL, err) != 0) goto done;

  if (bouncer_refresh(d->state, srv, db, NULL, err) != 0) goto done;
  sb_info("fleet", "server %s: database %s ready for role %s", srv->name, dbname, role);
  rc = 0;
done:
  wipe_free(sql);
  if (verifier) {
    explicit_bzero(verifier, strlen(verifier));
    PQfreemem(verifier);
  }
  if (lit) {
    explicit_bzero(lit, strlen(lit));
    PQfreemem(lit);
  }
  PQfreemem(qrole);
  PQfreemem(qdb);
  sb_db_free(db);
  return rc;
}

static int local_database_drop(sb_fleet_driver_t *d, const sb_server_t *srv,
                               const char *dbname, const char *role, sb_error_t *err) {
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, true, err) != 0 || check_ident(srv, "database", dbname, err) != 0 ||
      check_ident(srv, "role", role, err) != 0)
    return -1;
  int rc = -1;
  char *qrole = NULL, *qdb = NULL, *sql = NULL;
  sb_db_t *db = connect_admin(srv, srv->port, "postgres", err);
  if (!db) goto done;
  qrole = PQescapeIdentifier(db->conn, role, strlen(role));
  qdb = PQescapeIdentifier(db->conn, dbname, strlen(dbname));
  if (!qrole || !qdb) {
    sb_error_set(err, "server %s: cannot quote names: %s", srv->name, PQerrorMessage(db->conn));
    goto done;
  }
  bool exists = false;
  if (row_exists(db, srv, "SELECT 1 FROM pg_roles WHERE rolname = $1", role, &exists, err) != 0)
    goto done;
  if (exists) {
    /* No new session may start while the old ones are ended. */
    sql = sb_xasprintf("ALTER ROLE %s NOLOGIN", qrole);
    if (run_sql(db, srv, "cannot disable a role", sql, 0, NULL, err) != 0) goto done;
  }
  if (terminate_sessions(db, srv, "usename = $1 OR datname = $2", role, dbname, err) != 0)
    goto done;
  free(sql);
  sql = sb_xasprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", qdb);
  if (run_sql(db, srv, "cannot drop a database", sql, 0, NULL, err) != 0) goto done;
  free(sql);
  sql = sb_xasprintf("DROP ROLE IF EXISTS %s", qrole);
  if (run_sql(db, srv, "cannot drop a role", sql, 0, NULL, err) != 0) goto done;
  const char *kill_dbs[] = {dbname, NULL};
  if (bouncer_refresh(d->state, srv, db, kill_dbs, err) != 0) goto done;
  sb_info("fleet", "server %s: dropped database %s and role %s", srv->name, dbname, role);
  rc = 0;
done:
  free(sql);
  PQfreemem(qrole);
  PQfreemem(qdb);
  sb_db_free(db);
  return rc;
}

static int local_role_set_login(sb_fleet_driver_t *d, const sb_server_t *srv, const char *role,
                                bool login, sb_error_t *err) {
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, true, err) != 0 || check_ident(srv, "role", role, err) != 0) return -1;
  int rc = -1;
  char *qrole = NULL, *sql = NULL;
  const char **dbs = NULL;
  PGresult *res = NULL;
  sb_db_t *db = connect_admin(srv, srv->port, "postgres", err);
  if (!db) goto done;
  qrole = PQescapeIdentifier(db->conn, role, strlen(role));
  if (!qrole) {
    sb_error_set(err, "server %s: cannot quote a name: %s", srv->name, PQerrorMessage(db->conn));
    goto done;
  }
  sql = sb_xasprintf("ALTER ROLE %s %s", qrole, login ? "LOGIN" : "NOLOGIN");
  if (run_sql(db, srv, login ? "cannot resume a role" : "cannot suspend a role", sql, 0, NULL,
              err) != 0)
    goto done;
  if (!login) {
    if (terminate_sessions(db, srv, "usename = $1", role, NULL, err) != 0) goto done;
    /* PgBouncer's clients of the role's databases too: they hold no server session
     * between transactions, so only PgBouncer can end them. */
    res = sb_db_query(db,
                      "SELECT datname FROM pg_database WHERE datdba = "
                      "(SELECT oid FROM pg_roles WHERE rolname = $1)",
                      1, &role, err);
    if (!res) {
      sb_error_prefix(err, "server %s", srv->name);
      goto done;
    }
    dbs = sb_xcalloc((size_t)PQntuples(res) + 1, sizeof *dbs);
    for (int i = 0; i < PQntuples(res); i++) dbs[i] = PQgetvalue(res, i, 0);
  }
  if (bouncer_refresh(d->state, srv, db, dbs, err) != 0) goto done;
  sb_info("fleet", "server %s: role %s %s", srv->name, role, login ? "resumed" : "suspended");
  rc = 0;
done:
  free(dbs);
  PQclear(res);
  free(sql);
  PQfreemem(qrole);
  sb_db_free(db);
  return rc;
}

/* A passfile line field: ':' and '\' escaped with '\'. Caller frees. */
static char *passfile_field(const char *v) {
  char *out = sb_xmalloc(2 * strlen(v) + 1), *o = out;
  for (; *v; v++) {
    if (*v == ':' || *v == '\\') *o++ = '\\';
    *o++ = *v;
  }
  *o = '\0';
  return out;
}

static int local_database_dump(sb_fleet_driver_t *d, const sb_server_t *srv, const char *dbname,
                               const char *path, int64_t *size_out, sb_error_t *err) {
  local_state_t *st = d->state;
  sb_error_t scratch;
  if (!err) err = &scratch;
  if (check_server(srv, true, err) != 0 || check_ident(srv, "database", dbname, err) != 0)
    return -1;
  if (!path || !*path) {
    sb_error_set(err, "server %s: no path to dump database %s to", srv->name, dbname);
    return -1;
  }
  if (srv->port <= 0) {
    sb_error_set(err, "server %s: no port known (was it created?)", srv->name);
    return -1;
  }
  server_paths_t p;
  paths_init(&p, st, srv->name);
  int rc = -1, fd = -1;
  char *target = sb_path_absolute(path);
  char *tmp = sb_xasprintf("%s.tmp", target);
  char *passfile = sb_path_join(p.root, ".dump-XXXXXX");
  char *pw = passfile_field(srv->admin_password), *line = NULL, *conninfo = NULL;
  char *pg_dump = sb_path_join(st->bindir, "pg_dump"), *out = NULL;

  /* pg_dump is a client: it runs as this process's user, which then owns the archive.
   * The password reaches it through a passfile that lives only for this call, never on
   * its command line or in the environment of anything else. */
  fd = mkstemp(passfile);
  if (fd < 0) {
    sb_error_set(err, "server %s: cannot create a passfile in %s: %s", srv->name, p.root,
                 strerror(errno));
    free(passfile);
    passfile = NULL;
    goto done;
  }
  line = sb_xasprintf("%s:%d:%s:%s:%s\n", LOCAL_HOST, srv->port, dbname, srv->admin_user, pw);
  size_t len = strlen(line);
  if (write(fd, line, len) != (ssize_t)len || close(fd) != 0) {
    fd = -1;
    sb_error_set(err, "server %s: cannot write %s: %s", srv->name, passfile, strerror(errno));
    goto done;
  }
  fd = -1;
  conninfo = sb_xasprintf("host=%s port=%d user=%s dbname=%s passfile=%s connect_timeout=10",
                          LOCAL_HOST, srv->port, srv->admin_user, dbname, passfile);
  const char *argv[] = {pg_dump, "--format=custom", "--no-password", "--file", tmp,
                        "--dbname", conninfo, NULL};
  int prc = sb_proc_run(argv, NULL, "/", &out, err);
  if (prc != 0) {
    if (prc > 0) {
      size_t olen = out ? strlen(out) : 0;
      sb_error_set(err, "pg_dump exited with %d: %s", prc,
                   olen > 600 ? out + olen - 600 : (out ? out : ""));
    }
    sb_error_prefix(err, "server %s: cannot dump database %s", srv->name, dbname);
    goto done;
  }
  if (rename(tmp, target) != 0) {
    sb_error_set(err, "server %s: cannot rename %s: %s", srv->name, tmp, strerror(errno));
    goto done;
  }
  struct stat sb;
  if (stat(target, &sb) != 0) {
    sb_error_set(err, "server %s: cannot stat %s: %s", srv->name, target, strerror(errno));
    goto done;
  }
  if (size_out) *size_out = (int64_t)sb.st_size;
  sb_info("fleet", "server %s: dumped database %s to %s (%lld bytes)", srv->name, dbname,
          target, (long long)sb.st_size);
  rc = 0;
done:
  if (fd >= 0) close(fd);
  if (passfile) unlink(passfile);
  if (rc != 0) unlink(tmp);
  free(out);
  free(pg_dump);
  free(conninfo);
  wipe_free(line);
  wipe_free(pw);
  free(passfile);
  free(tmp);
  free(target);
  paths_free(&p);
  return rc;
}

/* ---- the driver ------------------------------------------------------------------- */

static void local_free(sb_fleet_driver_t *d) {
  if (!d) return;
  local_state_t *st = d->state;
  if (st) {
    free(st->servers_dir);
    free(st->bindir);
    free(st);
  }
  free(d);
}

sb_fleet_driver_t *sb_fleet_local_new(const char *base_dir, sb_error_t *err) {
  if (!base_dir || !*base_dir) {
    sb_error_set(err, "the local fleet driver needs a base directory");
    return NULL;
  }
  local_state_t *st = sb_xcalloc(1, sizeof *st);
  if (sb_runas_postgres(&st->as, err) != 0) goto fail;
  st->bindir = sb_pg_bindir(err);
  if (!st->bindir) goto fail;
  char *base = sb_path_absolute(base_dir);
  st->servers_dir = sb_path_join(base, "servers");
  free(base);
  /* Searchable, not listable, by the user the servers run as. */
  if (sb_mkdir_p(st->servers_dir, 0711, err) != 0) goto fail;

  sb_fleet_driver_t *d = sb_xcalloc(1, sizeof *d);
  d->name = "local";
  d->state = st;
  d->server_create = local_server_create;
  d->server_ensure_running = local_server_ensure_running;
  d->server_stop = local_server_stop;
  d->server_destroy = local_server_destroy;
  d->server_probe = local_server_probe;
  d->database_create = local_database_create;
  d->database_drop = local_database_drop;
  d->role_set_login = local_role_set_login;
  d->database_dump = local_database_dump;
  d->free = local_free;
  return d;
fail:
  free(st->servers_dir);
  free(st->bindir);
  free(st);
  return NULL;
}

/* Percent-encodes everything but [A-Za-z0-9] (always safe in any URL part). Caller
 * frees. */
static char *url_encode(const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  char *out = sb_xmalloc(3 * strlen(s) + 1), *o = out;
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')) {
      *o++ = (char)*c;
    } else {
      *o++ = '%';
      *o++ = hex[*c >> 4];
      *o++ = hex[*c & 15];
    }
  }
  *o = '\0';
  return out;
}

char *sb_fleet_tenant_url(const sb_server_t *srv, const char *dbname, const char *role,
                          const char *password) {
  const char *host = srv->host[0] ? srv->host : LOCAL_HOST;
  bool v6 = strchr(host, ':') != NULL;
  int port = srv->pooler_port > 0 ? srv->pooler_port : srv->port;
  char *u = url_encode(role), *pw = url_encode(password), *db = url_encode(dbname);
  char *url = sb_xasprintf("postgresql://%s:%s@%s%s%s:%d/%s", u, pw, v6 ? "[" : "", host,
                           v6 ? "]" : "", port, db);
  wipe_free(pw);
  free(u);
  free(db);
  return url;
}

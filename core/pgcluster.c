/*
 * pgcluster.c: initdb, start, stop and status of local PostgreSQL clusters
 * (see pgcluster.h).
 */
#include "pgcluster.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

char *sb_pg_bindir(sb_error_t *err) {
  const char *configured = sb_config()->pg_bindir;
  if (configured && *configured) {
    char *initdb = sb_path_join(configured, "initdb");
    bool ok = access(initdb, X_OK) == 0;
    free(initdb);
    if (ok) return sb_xstrdup(configured);
    sb_error_set(err, "pg_bindir %s holds no initdb program", configured);
    return NULL;
  }
  if (access("/usr/lib/postgresql/15/bin/initdb", X_OK) == 0)
    return sb_xstrdup("/usr/lib/postgresql/15/bin");
  FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
  if (p) {
    char line[1024] = "";
    bool got = fgets(line, sizeof line, p) != NULL;
    pclose(p);
    line[strcspn(line, "\n")] = '\0';
    if (got && *line) {
      char *initdb = sb_path_join(line, "initdb");
      bool ok = access(initdb, X_OK) == 0;
      free(initdb);
      if (ok) return sb_xstrdup(line);
    }
  }
  sb_error_set(err, "cannot find the PostgreSQL 15 server programs (initdb, pg_ctl): install "
                    "postgresql-15 or set SOLOBASE_PG_BINDIR");
  return NULL;
}

sb_pgcluster_t *sb_pgcluster_new(const char *root, const char *superuser, const char *password,
                                 int port, sb_error_t *err) {
  char *bindir = sb_pg_bindir(err);
  if (!bindir) return NULL;
  sb_pgcluster_t *c = sb_xcalloc(1, sizeof *c);
  if (sb_runas_postgres(&c->as, err) != 0) {
    free(bindir);
    free(c);
    return NULL;
  }
  c->root = sb_path_absolute(root);
  c->data_dir = sb_path_join(c->root, "data");
  c->log_file = sb_path_join(c->root, "server.log");
  c->bindir = bindir;
  c->superuser = sb_xstrdup(superuser);
  c->password = sb_xstrdup(password);
  c->port = port;
  return c;
}

void sb_pgcluster_free(sb_pgcluster_t *c) {
  if (!c) return;
  free(c->root);
  free(c->data_dir);
  free(c->log_file);
  free(c->bindir);
  free(c->superuser);
  if (c->password) {
    explicit_bzero(c->password, strlen(c->password));
    free(c->password);
  }
  free(c);
}

bool sb_pgcluster_initialized(const sb_pgcluster_t *c) {
  char *v = sb_path_join(c->data_dir, "PG_VERSION");
  bool ok = sb_path_exists(v);
  free(v);
  return ok;
}

/* Runs bindir/prog with args as the cluster's user; on failure err holds its output. */
static int run_pg(sb_pgcluster_t *c, const char *prog, const char *const *args,
                  sb_error_t *err) {
  const char *argv[32];
  char *path = sb_path_join(c->bindir, prog);
  int n = 0;
  argv[n++] = path;
  for (; args && *args && n < 31; args++) argv[n++] = *args;
  argv[n] = NULL;
  char *out = NULL;
  int rc = sb_proc_run(argv, &c->as, c->root, &out, err);
  if (rc > 0) {
    /* The last lines are the ones that say why. */
    size_t len = out ? strlen(out) : 0;
    const char *tail = out && len > 600 ? out + len - 600 : (out ? out : "");
    sb_error_set(err, "%s failed (exit %d): %s", prog, rc, tail);
  }
  free(out);
  free(path);
  return rc == 0 ? 0 : -1;
}

static void append_log_tail(sb_pgcluster_t *c, sb_error_t *err) {
  size_t len = 0;
  char *log = sb_read_file(c->log_file, &len, NULL);
  if (!log) return;
  const char *tail = len > 400 ? log + len - 400 : log;
  char msg[sizeof err->msg];
  snprintf(msg, sizeof msg, "%s; server log %s ends: %s", err->msg, c->log_file, tail);
  sb_error_set(err, "%s", msg);
  free(log);
}

int sb_pgcluster_init(sb_pgcluster_t *c, const char *const *conf_lines, bool nosync,
                      sb_error_t *err) {
  if (sb_mkdir_p(c->root, 0700, err) != 0) return -1;
  if (chmod(c->root, 0700) != 0) {
    sb_error_set(err, "cannot restrict %s: %s", c->root, strerror(errno));
    return -1;
  }
  if (sb_proc_chown(&c->as, c->root, err) != 0) return -1;
  if (!sb_proc_can_access(&c->as, c->root, true)) {
    sb_error_set(err,
                 "user %s cannot reach %s (a parent directory is not searchable by it); "
                 "choose a data directory it can reach, e.g. SOLOBASE_DATA_DIR=/var/lib/solobase",
                 c->as.active ? c->as.name : "running solobase", c->root);
    return -1;
  }
  /* initdb reads the superuser password from a file the cluster's user can read;
   * it lives for the duration of initdb only. */
  char *pwfile = sb_path_join(c->root, ".pwfile");
  char *pw = sb_xasprintf("%s\n", c->password);
  int rc = sb_write_file_atomic(pwfile, pw, strlen(pw), 0600, err);
  explicit_bzero(pw, strlen(pw));
  free(pw);
  if (rc == 0) rc = sb_proc_chown(&c->as, pwfile, err);
  if (rc == 0) {
    char *pwopt = sb_xasprintf("--pwfile=%s", pwfile);
    char *useropt = sb_xasprintf("--username=%s", c->superuser);
    const char *args[] = {"-D", c->data_dir, useropt, pwopt, "--auth-host=scram-sha-256",
                          "--auth-local=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
                          "--no-instructions", nosync ? "--no-sync" : NULL, NULL};
    rc = run_pg(c, "initdb", args, err);
    free(pwopt);
    free(useropt);
  }
  unlink(pwfile);
  free(pwfile);
  if (rc != 0) return -1;

  /* Loopback only, no Unix socket: nothing outside this machine, and no clash with a
   * system cluster's socket directory. */
  char *conf = sb_path_join(c->data_dir, "postgresql.conf");
  FILE *f = fopen(conf, "a");
  if (!f) {
    sb_error_set(err, "cannot append to %s: %s", conf, strerror(errno));
    free(conf);
    return -1;
  }
  fprintf(f, "\n# Added by solobase\nlisten_addresses = '127.0.0.1'\n"
             "unix_socket_directories = ''\npassword_encryption = 'scram-sha-256'\n"
             "logging_collector = off\nlog_min_messages = warning\n"
             "log_line_prefix = '%%m [%%p] %%q%%u@%%d '\n");
  for (; conf_lines && *conf_lines; conf_lines++) fprintf(f, "%s\n", *conf_lines);
  int bad = ferror(f);
  if (fclose(f) != 0 || bad) {
    sb_error_set(err, "cannot write %s", conf);
    free(conf);
    return -1;
  }
  free(conf);
  return 0;
}

/* The port line (4th) of postmaster.pid; -1 when absent. */
static int pidfile_port(const sb_pgcluster_t *c, long *pid_out) {
  char *path = sb_path_join(c->data_dir, "postmaster.pid");
  char *text = sb_read_file(path, NULL, NULL);
  free(path);
  if (!text) return -1;
  long fields[4] = {-1, -1, -1, -1};
  char *save = NULL, *line = strtok_r(text, "\n", &save);
  for (int i = 0; line && i < 4; i++, line = strtok_r(NULL, "\n", &save))
    if (i == 0 || i == 3) fields[i] = strtol(line, NULL, 10);
  free(text);
  if (pid_out) *pid_out = fields[0];
  return (int)fields[3];
}

bool sb_pgcluster_running(sb_pgcluster_t *c) {
  if (!sb_pgcluster_initialized(c)) return false;
  long pid = -1;
  int port = pidfile_port(c, &pid);
  if (pid <= 0 || port <= 0) return false;
  /* A stale pid file after a crash names a dead process (or, rarely, a reused pid:
   * then the port check below still catches a postmaster that is not ours). */
  if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return false;
  if (!sb_tcp_port_in_use(port)) return false;
  c->port = port;
  return true;
}

int sb_pgcluster_start(sb_pgcluster_t *c, sb_error_t *err) {
  if (sb_pgcluster_running(c)) return 0;
  if (c->port <= 0 || sb_tcp_port_in_use(c->port)) {
    int p = sb_free_tcp_port(err);
    if (p < 0) return -1;
    c->port = p;
  }
  char *opts = sb_xasprintf("-p %d", c->port);
  const char *args[] = {"-D", c->data_dir, "-l", c->log_file, "-w", "-t", "120", "-o", opts,
                        "start", NULL};
  int rc = run_pg(c, "pg_ctl", args, err);
  free(opts);
  if (rc != 0) {
    append_log_tail(c, err);
    return -1;
  }
  sb_debug("pgcluster", "started %s on 127.0.0.1:%d", c->root, c->port);
  return 0;
}

int sb_pgcluster_stop(sb_pgcluster_t *c, sb_error_t *err) {
  if (!sb_pgcluster_running(c)) return 0;
  const char *args[] = {"-D", c->data_dir, "-m", "fast", "-w", "-t", "120", "stop", NULL};
  return run_pg(c, "pg_ctl", args, err);
}

char *sb_pgcluster_url(const sb_pgcluster_t *c, const char *dbname) {
  /* Passwords we generate are [A-Za-z0-9], so they need no percent-encoding. */
  return sb_xasprintf("postgresql://%s:%s@127.0.0.1:%d/%s", c->superuser, c->password, c->port,
                      dbname);
}

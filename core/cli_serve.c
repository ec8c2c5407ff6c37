/*
 * cli_serve.c: `solobase serve` runs the engine until SIGTERM or SIGINT; `solobase up`
 * prepares the management database (init, migrate, seed) and then serves.
 *
 * Signals only set flags (through async-signal-safe writes to eventfds): SIGTERM and
 * SIGINT stop gracefully (workers finish the job in hand), SIGHUP reloads policies.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "engine.h"
#include "log.h"
#include "mgmtdb.h"
#include "migrate.h"
#include "server.h"
#include "util.h"

static sb_engine_t *running;

static void on_stop(int sig) {
  (void)sig;
  if (running) sb_engine_request_stop(running);
}

static void on_hup(int sig) {
  (void)sig;
  if (running) sb_engine_reload_policies(running);
}

static int serve(void) {
  sb_error_t err;
  /* Threads start with these signals blocked, so they reach the main thread only and
   * never interrupt a worker's or the server loop's system calls. */
  sigset_t sigs, old;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  running = sb_engine_start(&err);
  if (!running) {
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return sb_cli_fail_err(&err);
  }
  struct sigaction sa = {0};
  sa.sa_handler = on_stop;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sa.sa_handler = on_hup;
  sigaction(SIGHUP, &sa, NULL);
  sb_httpd_t *httpd = sb_httpd_start(running, &err);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (!httpd) {
    sb_engine_t *e = running;
    running = NULL;
    sb_engine_request_stop(e);
    sb_engine_free(e);
    return sb_cli_fail_err(&err);
  }
  sb_engine_wait(running);
  sb_info("serve", "stopping: answering requests in flight, finishing the work in hand");
  sb_httpd_stop(httpd);
  sb_engine_t *e = running;
  running = NULL;
  sb_engine_free(e);
  return SB_EXIT_OK;
}

static int parse(int argc, char **argv, const char *cmd, const char *help) {
  static const struct option opts[] = {
      {"workers", required_argument, NULL, 'w'},
      {"listen", required_argument, NULL, 'l'},
      {"help", no_argument, NULL, 'h'},
      {0, 0, 0, 0}};
  optind = 0;
  int c;
  sb_error_t err;
  while ((c = getopt_long(argc, argv, "+w:l:h", opts, NULL)) != -1) {
    if (c == 'h') {
      fputs(help, stdout);
      return SB_EXIT_OK;
    }
    if (c == 'w' || c == 'l') {
      if (sb_config_set(c == 'w' ? "workers" : "listen", optarg, &err) != 0 ||
          sb_config_finish(&err) != 0)
        return sb_cli_fail_err(&err);
      continue;
    }
    return sb_cli_bad_option(cmd, argv);
  }
  if (optind < argc) return sb_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  return -1;
}

int sb_cmd_serve(int argc, char **argv) {
  int r = parse(argc, argv, "serve",
                "usage: solobase serve [--workers N] [--listen HOST:PORT]\n\n"
                "Runs the engine: job workers, the scheduler (when this engine leads), policy\n"
                "hot reload, and the HTTP and websocket server. Several engines may serve\n"
                "one management database. The database must answer at start; an outage\n"
                "later is waited out (HTTP 503 meanwhile), and the engine comes back under\n"
                "a new engine id. SIGTERM/SIGINT stop gracefully; SIGHUP reloads policies.\n");
  return r >= 0 ? r : serve();
}

int sb_cmd_up(int argc, char **argv) {
  int r = parse(argc, argv, "up",
                "usage: solobase up [--workers N] [--listen HOST:PORT]\n\n"
                "Creates (embedded cluster and) management database if missing, applies\n"
                "migrations and seeds, then serves: `db init && db migrate && db seed && serve`.\n");
  if (r >= 0) return r;
  sb_error_t err;
  char *url = sb_mgmtdb_url(&err);
  if (!url) return sb_cli_fail_err(&err);
  int rc = sb_mgmtdb_create_database(url, NULL, &err);
  char red[512];
  sb_redact_conninfo(url, red, sizeof red);
  explicit_bzero(url, strlen(url));
  free(url);
  if (rc != 0) return sb_cli_fail_err(&err);
  sb_db_t *db = sb_mgmtdb_connect("solobase up", &err);
  if (!db) return sb_cli_fail_err(&err);
  int applied = 0, seeds = 0;
  rc = sb_migrate_apply(db, sb_config()->schema_dir, &applied, &err);
  if (rc == 0) rc = sb_seed_apply(db, sb_config()->schema_dir, sb_config()->seeds_dir, &seeds, &err);
  sb_db_free(db);
  if (rc != 0) return sb_cli_fail_err(&err);
  sb_info("up", "management database %s: %d migration%s applied, seeds current", red, applied,
          applied == 1 ? "" : "s");
  return serve();
}

/*
 * proc.c: fork/exec of helper programs with user switching (see proc.h).
 */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

int sb_runas_postgres(sb_runas_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  if (geteuid() != 0) return 0;
  struct passwd pw, *res = NULL;
  char buf[4096];
  if (getpwnam_r("postgres", &pw, buf, sizeof buf, &res) != 0 || !res) {
    sb_error_set(err, "running as root, but there is no `postgres` user to run PostgreSQL as "
                      "(install postgresql-15, or run solobase as an ordinary user)");
    return -1;
  }
  out->active = true;
  out->uid = pw.pw_uid;
  out->gid = pw.pw_gid;
  snprintf(out->home, sizeof out->home, "%s", pw.pw_dir);
  snprintf(out->name, sizeof out->name, "%s", pw.pw_name);
  return 0;
}

/* In the child: become `as`. Returns -1 on failure (errno set). */
static int become(const sb_runas_t *as) {
  if (!as || !as->active) return 0;
  if (setgroups(0, NULL) != 0 || setgid(as->gid) != 0 || setuid(as->uid) != 0) return -1;
  setenv("HOME", as->home, 1);
  setenv("USER", as->name, 1);
  setenv("LOGNAME", as->name, 1);
  return 0;
}

int sb_proc_run(const char *const argv[], const sb_runas_t *as, const char *cwd, char **output,
                sb_error_t *err) {
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    sb_error_set(err, "pipe: %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    sb_error_set(err, "fork: %s", strerror(errno));
    close(pipefd[0]);
    close(pipefd[1]);
    return -1;
  }
  if (pid == 0) {
    /* Child: only async-signal-safe work between fork and exec matters for threads;
     * these calls are what every daemon launcher does. */
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, 0);
    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    /* Nothing of ours (sockets, listeners) may leak into a long-lived postmaster. */
    close_range(3, ~0U, 0);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (become(as) != 0) {
      dprintf(2, "cannot switch to user %s: %s\n", as->name, strerror(errno));
      _exit(127);
    }
    if (chdir(cwd ? cwd : "/") != 0) {
      dprintf(2, "cannot enter %s: %s\n", cwd, strerror(errno));
      _exit(127);
    }
    execv(argv[0], (char *const *)argv);
    dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(pipefd[1]);
  size_t cap = 4096, len = 0;
  char *buf = sb_xmalloc(cap);
  for (;;) {
    if (cap - len < 1024) buf = sb_xrealloc(buf, cap *= 2);
    ssize_t n = read(pipefd[0], buf + len, cap - len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  close(pipefd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (output) *output = buf;
  else free(buf);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  sb_error_set(err, "%s died of signal %d", argv[0], WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return -1;
}

bool sb_proc_can_access(const sb_runas_t *as, const char *path, bool write) {
  if (!as || !as->active) return access(path, X_OK | (write ? W_OK : 0)) == 0;
  pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    if (become(as) != 0) _exit(1);
    _exit(access(path, X_OK | (write ? W_OK : 0)) == 0 ? 0 : 1);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int sb_proc_chown(const sb_runas_t *as, const char *path, sb_error_t *err) {
  if (!as || !as->active) return 0;
  if (chown(path, as->uid, as->gid) != 0) {
    sb_error_set(err, "cannot give %s to user %s: %s", path, as->name, strerror(errno));
    return -1;
  }
  return 0;
}

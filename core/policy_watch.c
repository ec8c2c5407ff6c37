/*
 * policy_watch.c: the inotify thread that reloads policies (see policy_watch.h).
 */
#include "policy_watch.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Quiet period after the last change before reloading: editors save in several steps
 * (write a temporary file, rename it over the old one). */
#define SETTLE_MS 50

struct sb_policy_watch {
  sb_policy_registry_t *reg;
  int inotify_fd;
  int wake_fd; /* eventfd: 1 = reload now, 2^32 = stop */
  pthread_t thread;
  _Atomic unsigned long reloads;
};

static void reload(sb_policy_watch_t *w) {
  sb_policy_report_t rep;
  sb_error_t err;
  if (sb_policy_registry_reload(w->reg, &rep, &err) != 0) {
    sb_error("policy", "reload failed: %s", err.msg);
    return;
  }
  atomic_fetch_add(&w->reloads, 1);
  for (int i = 0; i < rep.n; i++) {
    const sb_policy_result_t *r = &rep.items[i];
    if (r->outcome == SB_POLICY_LOADED)
      sb_info("policy", "loaded %s version %.12s (%.2f ms)", r->name, r->sha256, rep.duration_ms);
    else if (r->outcome == SB_POLICY_REFUSED)
      sb_error("policy", "refused %s: %s; the previous version keeps serving", r->name, r->error);
    else if (r->outcome == SB_POLICY_REMOVED)
      sb_warn("policy", "%s", r->error);
  }
}

/* True when the inotify events in buf name a policy file. */
static bool touches_policy(const char *buf, ssize_t len) {
  bool hit = false;
  for (const char *p = buf; p < buf + len;) {
    const struct inotify_event *ev = (const struct inotify_event *)p;
    size_t n = ev->len ? strlen(ev->name) : 0;
    if (n > 4 && strcmp(ev->name + n - 4, ".lua") == 0 && ev->name[0] != '.') hit = true;
    if (ev->mask & IN_Q_OVERFLOW) hit = true;
    p += sizeof *ev + ev->len;
  }
  return hit;
}

static void *watch_main(void *arg) {
  sb_policy_watch_t *w = arg;
  uint64_t deadline = 0; /* ns; 0 = nothing pending */
  for (;;) {
    struct pollfd fds[2] = {{w->inotify_fd, POLLIN, 0}, {w->wake_fd, POLLIN, 0}};
    int timeout = -1;
    if (deadline) {
      uint64_t now = sb_now_ns();
      timeout = now >= deadline ? 0 : (int)((deadline - now) / 1000000) + 1;
    }
    int n = poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) {
      sb_error("policy", "watching %s failed: %s", sb_policy_registry_dir(w->reg), strerror(errno));
      return NULL;
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      uint64_t v = 0;
      if (read(w->wake_fd, &v, sizeof v) == sizeof v) {
        if (v >= (1ull << 32)) return NULL;
        deadline = sb_now_ns(); /* a trigger reloads at once */
      }
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
      ssize_t len;
      while ((len = read(w->inotify_fd, buf, sizeof buf)) > 0)
        if (touches_policy(buf, len)) deadline = sb_now_ns() + SETTLE_MS * 1000000ull;
    }
    if (deadline && sb_now_ns() >= deadline) {
      deadline = 0;
      reload(w);
    }
  }
}

sb_policy_watch_t *sb_policy_watch_start(sb_policy_registry_t *reg, sb_error_t *err) {
  sb_policy_watch_t *w = sb_xcalloc(1, sizeof *w);
  w->reg = reg;
  w->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->inotify_fd < 0 || w->wake_fd < 0 ||
      inotify_add_watch(w->inotify_fd, sb_policy_registry_dir(reg),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE) < 0) {
    sb_error_set(err, "cannot watch %s: %s", sb_policy_registry_dir(reg), strerror(errno));
    goto fail;
  }
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    sb_error_set(err, "cannot start the policy watcher thread");
    goto fail;
  }
  return w;
fail:
  if (w->inotify_fd >= 0) close(w->inotify_fd);
  if (w->wake_fd >= 0) close(w->wake_fd);
  free(w);
  return NULL;
}

void sb_policy_watch_trigger(sb_policy_watch_t *w) {
  uint64_t one = 1;
  ssize_t r = write(w->wake_fd, &one, sizeof one); /* async-signal-safe */
  (void)r;
}

unsigned long sb_policy_watch_reloads(sb_policy_watch_t *w) { return atomic_load(&w->reloads); }

void sb_policy_watch_stop(sb_policy_watch_t *w) {
  if (!w) return;
  uint64_t stop = 1ull << 32;
  ssize_t r = write(w->wake_fd, &stop, sizeof stop);
  (void)r;
  pthread_join(w->thread, NULL);
  close(w->inotify_fd);
  close(w->wake_fd);
  free(w);
}

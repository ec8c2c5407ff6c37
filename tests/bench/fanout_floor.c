/*
 * fanout_floor.c: what this machine allows the fan-out benchmark at best (issue: event
 * stream and HTTP API; docs/benchmarks.md, run by tests/bench/run-events-bench fanout).
 *
 * The fan-out goal (1,000 websocket subscribers, events committed at 1,000/s, p99 from
 * commit to receipt <= 10 ms) is bound by the kernel: every subscriber is a loopback TCP
 * connection, and each message to it costs a send() on the server's side and a recv()
 * on the client's, on the same two cores. This program is that traffic with nothing
 * else: no database, no websocket framing, no JSON, no filters. Events are "committed"
 * by the clock at --rate; senders (--senders threads, the sockets split between them)
 * write each socket one message holding every event since its last message, in passes
 * at most one per --window-us (the engine's events_coalesce_us; the first event after a
 * quiet spell goes at once), like the engine does after its read; one receiver thread
 * (epoll) reads every socket, like the benchmark's client. Each event is a fixed record
 * of --event-bytes carrying its commit time; latency is receipt minus commit.
 *
 * No server can do better on the same machine with the same client: the figures are
 * the floor under the engine's, printed beside them by run-events-bench.
 *
 *   build/fanout_floor [--clients 1000] [--rate 1000] [--seconds 10] [--window-us 5000]
 *                      [--senders 1] [--event-bytes 350]
 * The last line is `RESULT key=value ...`.
 */
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SENDERS 8

static struct {
  int clients, rate, seconds, window_us, senders, event_bytes;
} O = {1000, 1000, 10, 5000, 1, 350};

static int *srv_fd, *cli_fd;
static double t0;
static atomic_int senders_done;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double thread_cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "fanout_floor: %s: %s\n", what, strerror(errno));
  exit(2);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* ---- senders ---- */

typedef struct sender {
  pthread_t th;
  int first, n;       /* its sockets: srv_fd[first .. first+n) */
  long *upto;         /* per socket: events sent so far */
  long sends, short_writes;
  double cpu_s;
} sender_t;

/* Event i "commits" at t0 + i / rate. */
static long events_due(double t) {
  long n = (long)((t - t0) * O.rate) + 1;
  long total = (long)O.rate * O.seconds;
  return n < 0 ? 0 : n > total ? total : n;
}

static void *sender_main(void *arg) {
  sender_t *s = arg;
  long total = (long)O.rate * O.seconds;
  size_t cap = (size_t)O.event_bytes * 4096;
  unsigned char *buf = calloc(1, cap);
  double c0 = thread_cpu_s(), last_pass = 0, window = O.window_us / 1e6;
  long done = 0; /* events every socket has */
  while (done < total) {
    /* The next pass: when an event has come and a window has passed since the last. */
    double next_event = t0 + (double)done / O.rate;
    double at = last_pass + window > next_event ? last_pass + window : next_event;
    for (double t; (t = now_s()) < at;) {
      double left = at - t;
      if (left > 0.0002) usleep((useconds_t)((left - 0.0001) * 1e6));
    }
    last_pass = now_s();
    long upto = events_due(last_pass);
    long k = upto - done;
    if (k * O.event_bytes > (long)cap) k = (long)cap / O.event_bytes, upto = done + k;
    for (long i = 0; i < k; i++) {
      double commit = t0 + (double)(done + i) / O.rate;
      memcpy(buf + i * O.event_bytes, &commit, sizeof commit);
    }
    size_t len = (size_t)(k * O.event_bytes);
    for (int c = 0; c < s->n; c++) {
      int fd = srv_fd[s->first + c];
      size_t off = 0;
      while (off < len) { /* a full socket: wait for it, as a server's queue would */
        ssize_t w = send(fd, buf + off, len - off, 0);
        s->sends++;
        if (w < 0 && errno != EINTR) die("send");
        if (w > 0) off += (size_t)w;
        if (off < len) s->short_writes++, usleep(100);
      }
    }
    done = upto;
  }
  s->cpu_s = thread_cpu_s() - c0;
  free(buf);
  atomic_fetch_add(&senders_done, 1);
  return NULL;
}

/* ---- the receiver ---- */

typedef struct conn {
  unsigned char part[16]; /* the start of a record split across reads */
  int have;               /* bytes of the current record read so far */
  long events;
} conn_t;

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"clients", required_argument, NULL, 'c'}, {"rate", required_argument, NULL, 'r'},
      {"seconds", required_argument, NULL, 's'}, {"window-us", required_argument, NULL, 'w'},
      {"senders", required_argument, NULL, 'n'}, {"event-bytes", required_argument, NULL, 'b'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
  for (int ch; (ch = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
    switch (ch) {
    case 'c': O.clients = atoi(optarg); break;
    case 'r': O.rate = atoi(optarg); break;
    case 's': O.seconds = atoi(optarg); break;
    case 'w': O.window_us = atoi(optarg); break;
    case 'n': O.senders = atoi(optarg); break;
    case 'b': O.event_bytes = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: fanout_floor [--clients N] [--rate R] [--seconds S] "
                      "[--window-us W] [--senders T] [--event-bytes B]\n");
      return ch == 'h' ? 0 : 2;
    }
  }
  if (O.clients < 1 || O.rate < 1 || O.seconds < 1 || O.window_us < 0 || O.senders < 1 ||
      O.senders > MAX_SENDERS || O.event_bytes < 16) {
    fprintf(stderr, "fanout_floor: a setting is out of range\n");
    return 2;
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  /* Loopback connections, as the benchmark's: Nagle off on the sending side. */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
    die("listen on 127.0.0.1");
  srv_fd = calloc((size_t)O.clients, sizeof *srv_fd);
  cli_fd = calloc((size_t)O.clients, sizeof *cli_fd);
  conn_t *conns = calloc((size_t)O.clients, sizeof *conns);
  int ep = epoll_create1(0);
  for (int i = 0; i < O.clients; i++) {
    cli_fd[i] = socket(AF_INET, SOCK_STREAM, 0);
    if (cli_fd[i] < 0 || connect(cli_fd[i], (struct sockaddr *)&sa, sizeof sa) != 0) die("connect");
    if ((srv_fd[i] = accept(lfd, NULL, NULL)) < 0) die("accept");
    int one = 1;
    setsockopt(srv_fd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, cli_fd[i], &ev) != 0) die("epoll_ctl");
  }
  close(lfd);

  long total = (long)O.rate * O.seconds, expected = total * O.clients;
  double *lat = malloc((size_t)expected * sizeof *lat);
  if (!lat) die("malloc");
  long got = 0, recvs = 0;
  sender_t snd[MAX_SENDERS] = {0};
  t0 = now_s() + 0.2;
  for (int t = 0, per = O.clients / O.senders; t < O.senders; t++) {
    snd[t].first = t * per;
    snd[t].n = t == O.senders - 1 ? O.clients - t * per : per;
    pthread_create(&snd[t].th, NULL, sender_main, &snd[t]);
  }
  double c0 = thread_cpu_s(), last_rx = now_s();
  unsigned char *buf = malloc(1 << 16);
  struct epoll_event evs[256];
  while (got < expected) {
    int k = epoll_wait(ep, evs, 256, 100);
    if (k < 0 && errno != EINTR) die("epoll_wait");
    double t = now_s();
    if (k <= 0) {
      if (atomic_load(&senders_done) == O.senders && t - last_rx > 3) break;
      continue;
    }
    last_rx = t;
    for (int e = 0; e < k; e++) {
      conn_t *c = &conns[evs[e].data.u32];
      ssize_t r = recv(cli_fd[evs[e].data.u32], buf, 1 << 16, 0);
      recvs++;
      if (r <= 0) continue;
      t = now_s();
      /* Records: the first 8 bytes of each are its commit time. */
      for (ssize_t off = 0; off < r;) {
        if (c->have < 8) {
          ssize_t take = 8 - c->have < r - off ? 8 - c->have : r - off;
          memcpy(c->part + c->have, buf + off, (size_t)take);
          c->have += (int)take, off += take;
          if (c->have == 8) {
            double commit;
            memcpy(&commit, c->part, sizeof commit);
            if (got < expected) lat[got++] = (t - commit) * 1e3;
            c->events++;
          }
          continue;
        }
        ssize_t take = O.event_bytes - c->have < r - off ? O.event_bytes - c->have : r - off;
        c->have += (int)take, off += take;
        if (c->have == O.event_bytes) c->have = 0;
      }
    }
  }
  double rx_cpu = thread_cpu_s() - c0, elapsed = now_s() - t0;
  for (int t = 0; t < O.senders; t++) pthread_join(snd[t].th, NULL);
  long sends = 0, short_writes = 0;
  double tx_cpu = 0;
  for (int t = 0; t < O.senders; t++)
    sends += snd[t].sends, short_writes += snd[t].short_writes, tx_cpu += snd[t].cpu_s;
  qsort(lat, (size_t)got, sizeof *lat, cmp_double);
  double p50 = got ? lat[got / 2] : 0, p99 = got ? lat[(long)(got * 0.99)] : 0,
         max = got ? lat[got - 1] : 0;
  printf("floor: %d loopback TCP clients, %d events/s for %d s, window %d us, %d sender "
         "thread%s, %d-byte events\n",
         O.clients, O.rate, O.seconds, O.window_us, O.senders, O.senders == 1 ? "" : "s",
         O.event_bytes);
  printf("  deliveries: %ld of %ld in %.2f s = %.0f/s; %ld sends (%ld short), %ld recvs\n", got,
         expected, elapsed, (double)got / elapsed, sends, short_writes, recvs);
  printf("  commit to receipt: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", p50, p99, max);
  printf("  CPU: senders %.0f%% of a core (%.2f us per send), receiver %.0f%% (%.2f us per "
         "recv)\n",
         tx_cpu / elapsed * 100, sends ? tx_cpu / (double)sends * 1e6 : 0, rx_cpu / elapsed * 100,
         recvs ? rx_cpu / (double)recvs * 1e6 : 0);
  printf("RESULT mode=floor clients=%d rate=%d window_us=%d senders=%d deliveries=%ld "
         "deliveries_per_s=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f missing=%ld sends=%ld "
         "sender_cpu_pct=%.0f receiver_cpu_pct=%.0f us_per_send=%.2f us_per_recv=%.2f\n",
         O.clients, O.rate, O.window_us, O.senders, got, (double)got / elapsed, p50, p99, max,
         expected - got, sends, tx_cpu / elapsed * 100, rx_cpu / elapsed * 100,
         sends ? tx_cpu / (double)sends * 1e6 : 0, recvs ? rx_cpu / (double)recvs * 1e6 : 0);
  for (int i = 0; i < O.clients; i++) close(srv_fd[i]), close(cli_fd[i]);
  return got == expected ? 0 : 1;
}

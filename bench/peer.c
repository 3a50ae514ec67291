// Load peers for `sosplice bench` that can outrun the proxy under test
// (Node peers on a small machine hide its speed). Compiled by the bench with
// the system's C compiler. One thread, one epoll loop each.
//
//   peer echo                          prints its port, echoes every
//                                      connection back and closes it after
//                                      the client's EOF, until stdin closes
//   peer client PORT SLOTS SECONDS N   keeps SLOTS connections going for
//                                      SECONDS: each sends N bytes,
//                                      half-closes, reads N bytes back to
//                                      EOF; prints one JSON line
//
// and for the bulk workload:
//
//   peer sink                          prints its port, reads every
//                                      connection to EOF and closes it,
//                                      until stdin closes; then prints the
//                                      bytes it read as one JSON line
//   peer send PORT CONNECTIONS BYTES   sends BYTES in all over CONNECTIONS
//                                      connections, half-closes each, waits
//                                      for the sink's close; prints the
//                                      seconds it took as one JSON line
//
// and for `sosplice bench --udp`, in batches of datagrams per system call:
//
//   peer udp-recv                      prints its port, counts what arrives
//                                      until stdin closes, then prints one
//                                      JSON line
//   peer udp-send PORT SIZE SECONDS [RATE]
//                                      sends SIZE-byte datagrams to PORT for
//                                      SECONDS, as fast as it can or RATE a
//                                      second; prints one JSON line. Runs of
//                                      datagrams go as UDP GSO sends
//                                      (UDP_SEGMENT): the kernel cuts them
//                                      into datagrams before the receiver,
//                                      and one trip through the stack per
//                                      run lets the sender outrun a relay.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Echo: what was read and not yet written back stays in `pending`.
struct conn {
  int fd;
  char buf[65536];
  size_t pending;
  int eof;
};

// Returns 1 once nothing is pending (or the client is gone).
static int echo_flush(struct conn *c) {
  while (c->pending > 0) {
    ssize_t n = write(c->fd, c->buf, c->pending);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return 0;
    if (n <= 0) {
      c->pending = 0;
      c->eof = 1;
      return 1;
    }
    memmove(c->buf, c->buf + n, c->pending - n);
    c->pending -= n;
  }
  return 1;
}

// Edge-triggered: reads to EAGAIN and writes back until the socket is full.
static void echo_serve(int ep, struct conn *c) {
  for (;;) {
    int drained = 0;
    while (!c->eof && c->pending < sizeof c->buf) {
      ssize_t n = read(c->fd, c->buf + c->pending, sizeof c->buf - c->pending);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        drained = 1;
        break;
      }
      if (n <= 0) c->eof = 1;
      else c->pending += n;
    }
    if (!echo_flush(c)) return;  // EPOLLOUT brings us back
    if (c->eof) {
      epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
      close(c->fd);
      free(c);
      return;
    }
    if (drained) return;  // EPOLLIN brings us back
  }
}

// Up to 256 ready events, or 0 when interrupted or timed out.
static int wait_events(int ep, struct epoll_event *events, int timeout) {
  int n = epoll_wait(ep, events, 256, timeout);
  if (n < 0 && errno != EINTR) die("epoll_wait");
  return n < 0 ? 0 : n;
}

// A listening socket on a free loopback port, the port printed for the bench.
static int listen_loopback(void) {
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int on = 1;
  struct sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (l < 0 || setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0 ||
      getsockname(l, (struct sockaddr *)&a, &len) < 0)
    die("listen");
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  return l;
}

static int echo(void) {
  int l = listen_loopback();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0) die("epoll");
  ev.data.ptr = &ev;  // stdin: its EOF ends the server
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll stdin");
  struct epoll_event events[256];
  for (;;) {
    int n = wait_events(ep, events, -1);
    for (int i = 0; i < n; i++) {
      void *p = events[i].data.ptr;
      if (p == &ev) return 0;
      if (p == NULL) {
        int fd;
        while ((fd = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct conn *c = calloc(1, sizeof *c);
          if (!c) die("calloc");
          c->fd = fd;
          struct epoll_event cev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev) < 0) die("epoll_ctl");
          echo_serve(ep, c);
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) die("accept");
        continue;
      }
      echo_serve(ep, p);
    }
  }
}

// Client: one slot per concurrent connection.
struct slot {
  int fd;
  size_t sent, got;
  double started;
};

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int client(int port, int slots, double seconds, size_t bytes) {
  char *message = malloc(bytes + 1), buf[65536];
  struct slot *s = calloc(slots, sizeof *s);
  size_t cap = 1 << 20, done = 0, errors = 0;
  double *latency = malloc(cap * sizeof *latency);
  if (!message || !s || !latency) die("malloc");
  memset(message, 'x', bytes);
  struct sockaddr_in a = loopback(port);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll");
  double start = now(), deadline = start + seconds;
  int live = 0;
  for (int i = 0; i < slots; i++) s[i].fd = -1;
  for (;;) {
    // (Re)open every free slot while there is time.
    for (int i = 0; i < slots && now() < deadline; i++) {
      if (s[i].fd >= 0) continue;
      int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0) die("socket");
      if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
      struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
      if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
      s[i] = (struct slot){fd, 0, 0, now()};
      live++;
    }
    if (live == 0) break;
    struct epoll_event events[256];
    int n = wait_events(ep, events, 1000);
    for (int e = 0; e < n; e++) {
      struct slot *c = &s[events[e].data.u32];
      int failed = 0, finished = 0;
      while (c->sent < bytes) {
        ssize_t w = write(c->fd, message + c->sent, bytes - c->sent);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == ENOTCONN)) break;  // still connecting
        if (w <= 0) { failed = 1; break; }
        c->sent += w;
        if (c->sent == bytes && shutdown(c->fd, SHUT_WR) < 0) failed = 1;
      }
      while (!failed && !finished) {
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == ENOTCONN)) break;
        if (r < 0) failed = 1;
        else if (r == 0) finished = 1;
        else c->got += r;
      }
      if (finished && c->got != bytes) failed = 1;
      if (!failed && !finished) continue;
      if (failed) {
        errors++;
      } else {
        if (done == cap && !(latency = realloc(latency, (cap *= 2) * sizeof *latency))) die("realloc");
        latency[done++] = (now() - c->started) * 1000;
      }
      close(c->fd);  // drops its epoll registration
      c->fd = -1;
      live--;
    }
  }
  double elapsed = now() - start;
  qsort(latency, done, sizeof *latency, cmp);
  size_t p99 = done * 99 / 100;
  printf("{\"connections\":%zu,\"seconds\":%.6f,\"errors\":%zu,\"p50\":%.4f,\"p99\":%.4f}\n", done, elapsed,
         errors, done ? latency[done / 2] : 0, done ? latency[p99] : 0);
  return 0;
}

// The bulk peers' buffer: what the sink reads into, what the sender sends.
static char bulk_buf[1 << 20];

// Sink: reads every connection to EOF, then closes it; counts the bytes.

static int sink(void) {
  int l = listen_loopback();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = l};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0) die("epoll");
  ev.data.fd = 0;  // stdin: its EOF ends the sink
  if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) die("epoll stdin");
  long long bytes = 0;
  struct epoll_event events[256];
  for (;;) {
    int n = wait_events(ep, events, -1);
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == 0) {
        printf("{\"bytes\":%lld}\n", bytes);
        return 0;
      }
      if (fd == l) {
        int c;
        while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
          struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
          if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev) < 0) die("epoll_ctl");
        }
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) die("accept");
        continue;
      }
      ssize_t r;
      while ((r = read(fd, bulk_buf, sizeof bulk_buf)) > 0) bytes += r;
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      close(fd);  // EOF or an error: drops its epoll registration
    }
  }
}

// Send: BYTES shared over CONNECTIONS, each written, half-closed, then read
// to the sink's close.
struct sender {
  int fd;
  size_t left;
};

static int send_bulk(int port, int connections, size_t bytes) {
  struct sender *s = calloc(connections, sizeof *s);
  if (!s) die("calloc");
  memset(bulk_buf, 0x5a, sizeof bulk_buf);
  struct sockaddr_in a = loopback(port);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll");
  double start = now();
  for (int i = 0; i < connections; i++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) die("connect");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    s[i] = (struct sender){fd, bytes / connections + ((size_t)i < bytes % connections)};
  }
  for (int live = connections; live > 0;) {
    struct epoll_event events[256];
    int n = wait_events(ep, events, -1);
    for (int e = 0; e < n; e++) {
      struct sender *c = &s[events[e].data.u32];
      if (c->fd < 0) continue;
      while (c->left > 0) {
        size_t chunk = c->left < sizeof bulk_buf ? c->left : sizeof bulk_buf;
        ssize_t w = write(c->fd, bulk_buf, chunk);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == ENOTCONN)) break;  // full, or still connecting
        if (w <= 0) die("write");
        c->left -= w;
        if (c->left == 0 && shutdown(c->fd, SHUT_WR) < 0) die("shutdown");
      }
      if (c->left > 0) continue;
      char byte;
      ssize_t r = read(c->fd, &byte, 1);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (r != 0) die("read");  // the sink sends nothing
      close(c->fd);
      c->fd = -1;
      live--;
    }
  }
  printf("{\"seconds\":%.6f}\n", now() - start);
  return 0;
}

enum { kBatch = 64, kMaxSize = 65507, kSegments = 64 };

// Socket buffers of 4 MiB each way (the kernel caps them at its rmem_max
// and wmem_max): the relays get the same, so that a scheduling gap on a
// small machine is not loss.
enum { kBuffer = 4 << 20 };

static int udp_socket(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) die("socket");
  int size = kBuffer;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size) < 0)
    die("setsockopt");
  struct sockaddr_in a = loopback(0);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  return fd;
}

static char buffers[kBatch][kMaxSize];

static void udp_recv(void) {
  int fd = udp_socket();
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) die("getsockname");
  printf("%d\n", ntohs(a.sin_port));
  fflush(stdout);
  struct iovec iov[kBatch];
  struct mmsghdr msgs[kBatch];
  long long datagrams = 0, bytes = 0;
  struct pollfd fds[2] = {{fd, POLLIN, 0}, {0, POLLIN, 0}};
  for (;;) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (fds[1].revents) break;  // stdin closed (or written): report
    for (int i = 0; i < kBatch; i++) {
      iov[i] = (struct iovec){buffers[i], kMaxSize};
      msgs[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    int n = recvmmsg(fd, msgs, kBatch, MSG_DONTWAIT, NULL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) die("recvmmsg");
    datagrams += n;
    for (int i = 0; i < n; i++) bytes += msgs[i].msg_len;
  }
  printf("{\"datagrams\":%lld,\"bytes\":%lld}\n", datagrams, bytes);
}

static void udp_send(int port, size_t size, double seconds, double rate) {
  int fd = udp_socket();
  struct sockaddr_in to = loopback(port);
  if (connect(fd, (struct sockaddr *)&to, sizeof to) < 0) die("connect");
  // Each send: `run` datagrams of `size` bytes (one, for sizes GSO cannot
  // take: 0, or a run that would pass the 64 KiB a send can carry).
  size_t run = size > 0 ? kMaxSize / size : 1;
  if (run > kSegments) run = kSegments;
  memset(buffers[0], 0x5a, size * run);
  struct iovec iov = {buffers[0], size * run};
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } control;
  struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1};
  if (run > 1) {
    h.msg_control = control.buf;
    h.msg_controllen = sizeof control.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t segment = (uint16_t)size;
    memcpy(CMSG_DATA(c), &segment, sizeof segment);
  }
  long long datagrams = 0;
  double start = now(), end = start + seconds;
  for (double t = start; t < end; t = now()) {
    // Paced: no more than `rate` a second so far.
    if (rate > 0 && datagrams >= (t - start) * rate) continue;
    ssize_t n = sendmsg(fd, &h, 0);
    // The local send queue full, or an ICMP error from a relay not there yet.
    if (n < 0 && (errno == EAGAIN || errno == ENOBUFS || errno == EINTR ||
                  errno == ECONNREFUSED))
      continue;
    if (n < 0) die("sendmsg");
    datagrams += run;
  }
  printf("{\"datagrams\":%lld,\"bytes\":%lld,\"seconds\":%f}\n", datagrams,
         datagrams * (long long)size, now() - start);
}

int main(int argc, char **argv) {
  if (argc == 2 && !strcmp(argv[1], "echo")) return echo();
  if (argc == 6 && !strcmp(argv[1], "client"))
    return client(atoi(argv[2]), atoi(argv[3]), atof(argv[4]), strtoul(argv[5], NULL, 10));
  if (argc == 2 && !strcmp(argv[1], "sink")) return sink();
  if (argc == 5 && !strcmp(argv[1], "send"))
    return send_bulk(atoi(argv[2]), atoi(argv[3]), strtoull(argv[4], NULL, 10));
  if (argc == 2 && !strcmp(argv[1], "udp-recv")) {
    udp_recv();
    return 0;
  }
  if ((argc == 5 || argc == 6) && !strcmp(argv[1], "udp-send")) {
    int size = atoi(argv[3]);
    if (size < 0 || size > kMaxSize) {
      fprintf(stderr, "peer: size %d is out of range 0-%d\n", size, kMaxSize);
      return 2;
    }
    udp_send(atoi(argv[2]), (size_t)size, atof(argv[4]), argc == 6 ? atof(argv[5]) : 0);
    return 0;
  }
  fprintf(stderr, "usage: peer echo | peer client PORT SLOTS SECONDS BYTES | peer sink |\n"
                  "       peer send PORT CONNECTIONS BYTES | peer udp-recv |\n"
                  "       peer udp-send PORT SIZE SECONDS [RATE]\n");
  return 2;
}

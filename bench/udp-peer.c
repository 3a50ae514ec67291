// UDP load peers for `sosplice bench --udp`, fast enough to outrun a relay:
// batches of datagrams per system call (sendmmsg, recvmmsg).
//
//   udp-peer recv                      prints its port, counts what arrives
//                                      until stdin closes, then prints one
//                                      JSON line
//   udp-peer send PORT SIZE SECONDS [RATE]
//                                      sends SIZE-byte datagrams to PORT for
//                                      SECONDS, as fast as it can or RATE a
//                                      second; prints one JSON line. Runs of datagrams go as
//                                      UDP GSO sends (UDP_SEGMENT): the
//                                      kernel cuts them into datagrams before
//                                      the receiver, and one trip through the
//                                      stack per run lets the sender outrun
//                                      a relay.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { kBatch = 64, kMaxSize = 65507, kSegments = 64 };

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

static void receive(void) {
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

static void send_for(int port, size_t size, double seconds, double rate) {
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
  if (argc == 2 && strcmp(argv[1], "recv") == 0) {
    receive();
    return 0;
  }
  if ((argc == 5 || argc == 6) && strcmp(argv[1], "send") == 0) {
    int size = atoi(argv[3]);
    if (size < 0 || size > kMaxSize) {
      fprintf(stderr, "udp-peer: size %d is out of range 0-%d\n", size, kMaxSize);
      return 2;
    }
    send_for(atoi(argv[2]), (size_t)size, atof(argv[4]), argc == 6 ? atof(argv[5]) : 0);
    return 0;
  }
  fprintf(stderr, "usage: udp-peer recv | udp-peer send PORT SIZE SECONDS [RATE]\n");
  return 2;
}

// Small POSIX helpers shared by the platform engines.
#pragma once

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "splice.h"

namespace sosplice {

inline int64_t NowMs() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch())
      .count();
}

// For failures that leave an engine unable to go on (its own epoll, kqueue
// or wake-up descriptor failing): nothing sensible remains to report to.
[[noreturn]] inline void Fatal(const char* what) {
  std::perror(what);
  std::abort();
}

// Starts an engine thread that takes no signal: the process's handlers run
// on Node's threads, and here a signal would only interrupt system calls.
template <typename F>
std::thread StartThread(F&& run) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  struct Restore {
    sigset_t* old;
    ~Restore() { pthread_sigmask(SIG_SETMASK, old, nullptr); }
  } restore{&old};
  return std::thread(std::forward<F>(run));
}

// A socket's identity, the same whatever descriptor refers to it.
#ifdef __linux__
using SocketId = std::pair<dev_t, ino_t>;
#else
// The BSD kernels give a socket no inode number in fstat: a socket is known
// by its own address and its peer's, which no other socket on the host has
// together (the loopback peer has them the other way round).
using SocketId = std::string;
#endif

inline bool IdentifySocket(int fd, SocketId* id, SysError* err) {
  struct stat st;
  if (fstat(fd, &st) < 0) {
    *err = {errno, "fstat"};
    return false;
  }
  if (!S_ISSOCK(st.st_mode)) {
    *err = {ENOTSOCK, "fstat"};
    return false;
  }
#ifdef __linux__
  *id = {st.st_dev, st.st_ino};
#else
  struct sockaddr_storage own = {}, peer = {};
  socklen_t own_len = sizeof own, peer_len = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&own), &own_len) < 0) {
    *err = {errno, "getsockname"};
    return false;
  }
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) < 0) peer_len = 0;
  id->assign(reinterpret_cast<const char*>(&own), own_len);
  id->append(reinterpret_cast<const char*>(&peer), peer_len);
#endif
  return true;
}

// The identity as JavaScript sees it.
inline std::string SocketIdText(const SocketId& id) {
#ifdef __linux__
  return std::to_string(id.first) + ":" + std::to_string(id.second);
#else
  static const char hex[] = "0123456789abcdef";
  std::string text;
  for (unsigned char c : id) text += {hex[c >> 4], hex[c & 15]};
  return text;
#endif
}

inline void CloseFd(int fd) {
  // The descriptor is released even when close() reports EINTR, so it is
  // never retried.
  if (fd >= 0) close(fd);
}

// Duplicates both descriptors (close-on-exec), or neither.
inline bool DupBoth(int source, int drain, int* source_dup, int* drain_dup,
                    SysError* err) {
  *source_dup = fcntl(source, F_DUPFD_CLOEXEC, 0);
  *drain_dup = *source_dup < 0 ? -1 : fcntl(drain, F_DUPFD_CLOEXEC, 0);
  if (*drain_dup >= 0) return true;
  *err = {errno, "dup"};
  CloseFd(*source_dup);
  *source_dup = -1;
  return false;
}

}  // namespace sosplice

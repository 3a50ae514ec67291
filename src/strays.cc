#include "strays.h"
#include "posix.h"

#include <netinet/in.h>

#include <cerrno>
#include <cstring>

namespace sosplice {
namespace {

struct Address {
  sockaddr_storage ss = {};
  socklen_t len = sizeof ss;
  sockaddr* sa() { return reinterpret_cast<sockaddr*>(&ss); }
};

// Family, address and port: the rest of a sockaddr (padding, flow label)
// is not the sender's.
bool SameSender(const sockaddr_storage& a, const sockaddr_storage& b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto& x = reinterpret_cast<const sockaddr_in&>(a);
    auto& y = reinterpret_cast<const sockaddr_in&>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  auto& x = reinterpret_cast<const sockaddr_in6&>(a);
  auto& y = reinterpret_cast<const sockaddr_in6&>(b);
  return x.sin6_port == y.sin6_port &&
         std::memcmp(&x.sin6_addr, &y.sin6_addr, sizeof x.sin6_addr) == 0;
}

void SetPort(Address* a, in_port_t port) {
  if (a->ss.ss_family == AF_INET)
    reinterpret_cast<sockaddr_in*>(&a->ss)->sin_port = port;
  else
    reinterpret_cast<sockaddr_in6*>(&a->ss)->sin6_port = port;
}

struct Marker {
  int fd = -1;
  ~Marker() { CloseFd(fd); }
};

bool Failed(SysError* err, const char* syscall) {
  *err = {errno, syscall};
  return false;
}

// One datagram without waiting: 1, 0 when none is queued, -1 with `err`.
// 64 KiB holds any UDP datagram, so none is cut short; one buffer per
// thread, since Node's worker threads each have the addon.
int ReadOne(int fd, int flags, Stray* stray, SysError* err) {
  thread_local char buffer[65536];
  for (;;) {
    iovec iov = {buffer, sizeof buffer};
    msghdr msg = {};
    msg.msg_name = &stray->from;
    msg.msg_namelen = sizeof stray->from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | flags);
    if (n >= 0) {
      stray->data.assign(buffer, buffer + n);
      return 1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    Failed(err, "recvmsg");
    return -1;
  }
}

}  // namespace

bool SendMarker(int fd, Return* back, SysError* err) {
  back->peer_len = sizeof back->peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&back->peer), &back->peer_len) < 0)
    return Failed(err, "getpeername");
  back->own_len = sizeof back->own;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&back->own), &back->own_len) < 0)
    return Failed(err, "getsockname");
  // The marker on the socket's own local address, so that connecting to it
  // leaves that address as it is.
  Address marker;
  std::memcpy(&marker.ss, &back->own, back->own_len);
  marker.len = back->own_len;
  SetPort(&marker, 0);
  Marker m;
  m.fd = socket(marker.ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (m.fd < 0) return Failed(err, "socket");
  if (bind(m.fd, marker.sa(), marker.len) < 0) return Failed(err, "bind");
  marker.len = sizeof marker.ss;
  if (getsockname(m.fd, marker.sa(), &marker.len) < 0) return Failed(err, "getsockname");
  back->marker = marker.ss;
  if (connect(fd, marker.sa(), marker.len) < 0) return Failed(err, "connect");
  // Only the marker can arrive now, behind whatever came before; the
  // peer's datagrams go to the listener meanwhile. On failure the socket is
  // left connected to the marker: its owner closes it.
  if (sendto(m.fd, "", 0, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&back->own), back->own_len) < 0)
    return Failed(err, "sendto");
  return true;
}

bool TakeStrays(int fd, const Return& back, bool force, std::vector<Stray>* strays,
                bool* done, SysError* err) {
  *done = false;
  for (;;) {
    Stray stray;
    int got = ReadOne(fd, 0, &stray, err);
    if (got < 0) return false;
    if (got == 0) {
      // The marker is on its way (the kernel put off its receive work), or
      // was dropped: `force` says the caller has waited long enough.
      if (!force) return true;
      break;
    }
    if (SameSender(stray.from, back.marker)) break;
    strays->push_back(std::move(stray));
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&back.peer), back.peer_len) < 0)
    return Failed(err, "connect");
  // Forced: a marker that came between the empty queue and the connect is
  // at its head now, and is not the peer's.
  if (force) {
    Stray head;
    int got = ReadOne(fd, MSG_PEEK, &head, err);
    if (got < 0) return false;
    if (got == 1 && SameSender(head.from, back.marker) && ReadOne(fd, 0, &head, err) < 0)
      return false;
  }
  // FreeBSD forgets a socket's local address when it connects it again,
  // and takes the route's: a socket whose address was not that one moved.
  Address own;
  if (getsockname(fd, own.sa(), &own.len) < 0) return Failed(err, "getsockname");
  if (!SameSender(own.ss, back.own)) {
    *err = {EADDRNOTAVAIL, "connect"};
    return false;
  }
  *done = true;
  return true;
}

}  // namespace sosplice

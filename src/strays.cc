#include "strays.h"

#include <netinet/in.h>
#include <unistd.h>

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
  ~Marker() {
    if (fd >= 0) close(fd);
  }
};

bool Failed(SysError* err, const char* syscall) {
  *err = {errno, syscall};
  return false;
}

}  // namespace

bool SendMarker(int fd, sockaddr_storage* peer, socklen_t* peer_len, SysError* err) {
  Address own, marker;
  *peer_len = sizeof *peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(peer), peer_len) < 0)
    return Failed(err, "getpeername");
  if (getsockname(fd, own.sa(), &own.len) < 0) return Failed(err, "getsockname");
  // The marker on the socket's own local address, so that connecting to it
  // leaves that address as it is.
  Marker m;
  m.fd = socket(own.ss.ss_family, SOCK_DGRAM, 0);
  if (m.fd < 0) return Failed(err, "socket");
  marker = own;
  SetPort(&marker, 0);
  if (bind(m.fd, marker.sa(), marker.len) < 0) return Failed(err, "bind");
  marker.len = sizeof marker.ss;
  if (getsockname(m.fd, marker.sa(), &marker.len) < 0) return Failed(err, "getsockname");
  if (connect(fd, marker.sa(), marker.len) < 0) return Failed(err, "connect");
  // Only the marker can arrive now, behind whatever came before; the
  // peer's datagrams go to the listener meanwhile. On failure the socket is
  // left connected to the marker: its owner closes it.
  if (sendto(m.fd, "", 0, MSG_DONTWAIT, own.sa(), own.len) < 0) return Failed(err, "sendto");
  return true;
}

bool TakeStrays(int fd, const sockaddr_storage& peer, socklen_t peer_len, bool force,
                std::vector<Stray>* strays, bool* done, SysError* err) {
  Address marker;
  if (getpeername(fd, marker.sa(), &marker.len) < 0) return Failed(err, "getpeername");
  std::vector<char> buffer(65536);
  *done = false;
  while (!*done) {
    Stray stray;
    iovec iov = {buffer.data(), buffer.size()};
    msghdr msg = {};
    msg.msg_name = &stray.from;
    msg.msg_namelen = sizeof stray.from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n >= 0) {
      *done = SameSender(stray.from, marker.ss);
      if (*done) break;
      stray.data.assign(buffer.data(), buffer.data() + n);
      strays->push_back(std::move(stray));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Failed(err, "recvmsg");
    // The marker is on its way (the kernel deferred its receive work), or
    // was dropped: `force` says the caller has waited long enough.
    if (!force) return true;
    *done = true;
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&peer), peer_len) < 0)
    return Failed(err, "connect");
  return true;
}

}  // namespace sosplice

// The datagrams a connected UDP socket received before its connect().
#pragma once

#include <sys/socket.h>

#include <vector>

#include "splice.h"

namespace sosplice {

struct Stray {
  std::vector<char> data;
  sockaddr_storage from;
};

// For a socket that shares its address and port with others (a relay's
// per-client socket beside its listener): until it was connected, the
// kernel could give it any sender's datagrams, and they are still queued
// ahead of its peer's. This reads exactly those: it connects the socket to
// a marker socket of its own for a moment (so that only the marker can
// arrive), sends one datagram from the marker, connects back to the peer
// and reads up to the marker. `fd` is connected; on return it is connected
// to the same peer. Returns false with `err` set on failure.
bool TakeStrays(int fd, std::vector<Stray>* strays, SysError* err);

}  // namespace sosplice

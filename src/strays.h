// The datagrams a UDP socket received before its connect().
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
// ahead of its peer's. Taking them out is two steps, neither of which waits:
//
// SendMarker connects the socket, for the moment, to a marker socket of its
// own (so that nothing else can arrive), sends one datagram from it and
// closes it. `peer` gets the peer it was connected to, to go back to.
bool SendMarker(int fd, sockaddr_storage* peer, socklen_t* peer_len, SysError* err);

// TakeStrays reads what is queued ahead of the marker. Once it has read the
// marker, or with `force` once the queue is empty (a full queue drops the
// marker), it connects the socket to `peer` again and sets `done`.
bool TakeStrays(int fd, const sockaddr_storage& peer, socklen_t peer_len, bool force,
                std::vector<Stray>* strays, bool* done, SysError* err);

}  // namespace sosplice

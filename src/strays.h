// The datagrams a UDP socket received before its connect().
#pragma once

#include <sys/socket.h>

#include <vector>

#include "splice.h"

namespace sosplice {

struct Stray {
  std::vector<char> data;
  sockaddr_storage from = {};
};

// Where the socket goes back to after the marker: its peer, and the local
// address it must still have then; and the marker's address.
struct Return {
  sockaddr_storage peer = {};
  socklen_t peer_len = 0;
  sockaddr_storage own = {};
  socklen_t own_len = 0;
  sockaddr_storage marker = {};
};

// For a socket that shares its address and port with others (a relay's
// per-client socket beside its listener): until it was connected, the
// kernel could give it any sender's datagrams, and they are still queued
// ahead of its peer's. Taking them out is two steps, neither of which waits.
//
// SendMarker connects the socket, for the moment, to a marker socket of its
// own on its own address (so that nothing else can arrive), sends one empty
// datagram from it and closes it; `back` says where the socket returns.
// The marker's port is free again while its datagram is awaited: a local
// program that took it and sent to the socket within that wait would be
// taken for the marker.
bool SendMarker(int fd, Return* back, SysError* err);

// TakeStrays reads what is queued ahead of the marker into `strays`. Once
// it has read the marker, or with `force` once the queue is empty (a full
// queue drops the marker), it connects the socket back and sets `done`.
// On failure `strays` still has what was read.
bool TakeStrays(int fd, const Return& back, bool force, std::vector<Stray>* strays,
                bool* done, SysError* err);

}  // namespace sosplice

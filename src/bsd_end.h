// Why a so_splice flow ended, decided from what the BSD engine can observe
// once the source turns readable (or the drain fails, or the engine ends it
// itself). Plain C++ with no BSD header, so that the decision is compiled
// and tested on every host (test/engine/bsd_end_test.cc), against what the
// kernels' code says they do.
#pragma once

#include <cstdint>

#include "splice.h"

namespace sosplice {

enum class Kernel { kOpenBSD, kFreeBSD };

// What the engine saw, in the order it looks.
struct EndSignals {
  Kernel kernel = Kernel::kFreeBSD;
  bool datagram = false;  // a UDP splice (OpenBSD's kernel): no EOF
  int64_t count = 0;  // getsockopt(SO_SPLICE) once unspliced
  int64_t max = 0;    // the flow's max for this splice; 0: none
  int so_error = 0;   // the source's SO_ERROR, read (and so cleared)
  // recv(MSG_PEEK) of one byte from the source: 1 data waiting, 0 EOF (for
  // a datagram splice: an empty datagram waiting), -errno (-EAGAIN: nothing
  // there).
  int peek = 0;
  // The drain's failure: 0 while it can still send; its SO_ERROR, or EPIPE
  // when it can send no more without one.
  int drain_error = 0;
  // The end the engine asked for (kUnsplice, kClose or kIdle), 0 if none,
  // and whether its unsplice found the splice still on (it did not when
  // the kernel had ended it first: ENOTCONN on FreeBSD, EPROTO on OpenBSD).
  Reason asked = static_cast<Reason>(0);
  bool asked_first = false;
};

struct EndDecision {
  Reason reason = kEof;
  int error = 0;       // errno, for kError
  bool again = false;  // not ended: splice again with what is left of max
};

EndDecision DecideEnd(const EndSignals& s);

}  // namespace sosplice

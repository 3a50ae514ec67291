// The end-reason decision of the so_splice engine; see bsd_end.h. Each rule
// names the kernel code it follows: OpenBSD's somove() and sounsplice(),
// FreeBSD's so_splice_xfer(), so_splice_xfer_data() and so_unsplice(), both
// in sys/kern/uipc_socket.c.
#include "bsd_end.h"

#include <cerrno>

namespace sosplice {

namespace {

// What is left for a UDP splice with no error recorded. There is no EOF:
// a peek of 0 bytes is an empty datagram.
EndDecision DatagramEnd(const EndSignals& s) {
  if (s.peek < 0 && s.peek != -EAGAIN) return {kError, -s.peek, false};
  // somove() never splits a datagram: below max, it unsplices before one
  // that would pass it, records nothing, and leaves it in the source.
  if (s.max > 0 && s.count < s.max && s.peek >= 0) return {kMax, 0, false};
  if (s.asked != 0) return {s.asked, 0, false};
  return {kUnsplice, 0, false};  // someone else unspliced it
}

}  // namespace

EndDecision DecideEnd(const EndSignals& s) {
  const bool openbsd = s.kernel == Kernel::kOpenBSD;
  // Our own unsplice came first: the end is the one asked for, whatever
  // the source holds now (the rest stays there for JavaScript).
  if (s.asked != 0 && s.asked_first) return {s.asked, 0, false};

  if (openbsd) {
    // somove() records why it stopped in the source's so_error.
    if (s.so_error == EFBIG) {
      // Exactly at max; below it, a short TCP splice: go on with the rest.
      // A datagram splice is never short: it moves whole datagrams.
      if (!s.datagram && s.max > 0 && s.count < s.max) return {kMax, 0, true};
      return {kMax, 0, false};
    }
    if (s.so_error == ETIMEDOUT) return {kIdle, 0, false};
    // EPIPE (drain shut), the drain's own error, ELOOP, or the source's.
    if (s.so_error != 0) return {kError, s.so_error, false};
  } else {
    // so_splice_xfer() unsplices at max and records nothing.
    if (s.max > 0 && s.count >= s.max) return {kMax, 0, false};
    // FreeBSD records no end reason: any SO_ERROR, ETIMEDOUT and EFBIG
    // included, is the socket's own error.
    if (s.so_error != 0) return {kError, s.so_error, false};
  }
  // so_splice_xfer_data() returns the drain's send error (or EPIPE) and
  // so_splice_xfer() drops it; OpenBSD has put it in so_error above.
  if (s.drain_error != 0) return {kError, s.drain_error, false};
  if (s.datagram) return DatagramEnd(s);
  if (s.peek == 0) return {kEof, 0, false};
  if (s.peek < 0 && s.peek != -EAGAIN) return {kError, -s.peek, false};
  // Bytes waiting (or none) and no reason anywhere.
  if (s.asked != 0) return {s.asked, 0, false};
  if (openbsd) return {kUnsplice, 0, false};  // someone else unspliced it
  // FreeBSD: so_splice_xfer_data() ends a splice whose source has seen EOF
  // but whose drain has no room (EPIPE from a zero-length move), with bytes
  // still in the source, and a wake-up lost while the splice was running
  // leaves it on but idle. Neither is an end: splice again.
  return {kEof, 0, true};
}

}  // namespace sosplice

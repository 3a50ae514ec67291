// The so_splice engine's end decision (src/bsd_end.cc) against what the
// kernels' code does, one row per case, each naming the kernel function it
// comes from (sys/kern/uipc_socket.c on both). Runs on every host.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "../../src/bsd_end.h"

using namespace sosplice;

namespace {

constexpr Kernel O = Kernel::kOpenBSD;
constexpr Kernel F = Kernel::kFreeBSD;
constexpr Reason kNone = static_cast<Reason>(0);

struct Row {
  const char* what;
  EndSignals in;
  EndDecision want;
};

EndSignals S(Kernel k, int64_t count, int64_t max, int so_error, int peek,
             int drain_error = 0, Reason asked = kNone, bool first = false) {
  EndSignals s;
  s.kernel = k;
  s.count = count;
  s.max = max;
  s.so_error = so_error;
  s.peek = peek;
  s.drain_error = drain_error;
  s.asked = asked;
  s.asked_first = first;
  return s;
}

// The same signals from a UDP splice.
EndSignals U(EndSignals s) {
  s.datagram = true;
  return s;
}

constexpr EndDecision End(Reason r, int error = 0) { return {r, error, false}; }
constexpr EndDecision kAgain = {kEof, 0, true};

const Row rows[] = {
    // OpenBSD
    {"OpenBSD somove(): EOF with the source empty, so_error 0", S(O, 100, 0, 0, 0), End(kEof)},
    {"OpenBSD somove(): max reached exactly, EFBIG", S(O, 100, 100, EFBIG, -EAGAIN), End(kMax)},
    {"OpenBSD somove(): max reached exactly, EFBIG, bytes past it waiting", S(O, 100, 100, EFBIG, 1), End(kMax)},
    {"OpenBSD somove(): EFBIG below max is a short splice: splice the rest", S(O, 60, 100, EFBIG, 1), {kMax, 0, true}},
    {"OpenBSD soidle(): idle, ETIMEDOUT", S(O, 5, 0, ETIMEDOUT, -EAGAIN), End(kIdle)},
    {"OpenBSD somove(): drain shut, EPIPE in the source", S(O, 5, 0, EPIPE, 1), End(kError, EPIPE)},
    {"OpenBSD somove(): the drain's error (reset) in the source", S(O, 5, 0, ECONNRESET, -EAGAIN), End(kError, ECONNRESET)},
    {"OpenBSD sosplice(): a loop, ELOOP", S(O, 5, 0, ELOOP, 1), End(kError, ELOOP)},
    {"OpenBSD soreceive(): the source reset", S(O, 5, 0, ECONNRESET, 0), End(kError, ECONNRESET)},
    {"OpenBSD sounsplice() by someone else: bytes waiting, no reason", S(O, 5, 0, 0, 1), End(kUnsplice)},
    {"OpenBSD sosplice(-1) of ours went first", S(O, 5, 0, 0, 1, 0, kUnsplice, true), End(kUnsplice)},
    {"OpenBSD sosplice(-1) found it ended (EPROTO): the real end, EOF", S(O, 9, 0, 0, 0, 0, kUnsplice), End(kEof)},
    {"OpenBSD sosplice(-1) found it ended (EPROTO): the real end, max", S(O, 9, 9, EFBIG, 1, 0, kClose), End(kMax)},
    {"OpenBSD: ETIMEDOUT is idle only here", S(O, 0, 0, ETIMEDOUT, 1), End(kIdle)},
    // OpenBSD, UDP (PR_ATOMIC in somove()): no EOF, whole datagrams
    {"OpenBSD UDP somove(): max reached exactly, EFBIG", U(S(O, 900, 900, EFBIG, 1)), End(kMax)},
    {"OpenBSD UDP somove(): EFBIG is never a short splice", U(S(O, 600, 900, EFBIG, 1)), End(kMax)},
    {"OpenBSD UDP somove(): a datagram past max stays in the source, nothing recorded",
     U(S(O, 900, 1000, 0, 1)), End(kMax)},
    {"OpenBSD UDP somove(): an empty datagram is not EOF", U(S(O, 10, 0, 0, 0)), End(kUnsplice)},
    {"OpenBSD UDP somove(): the next datagram, empty, past max", U(S(O, 900, 1000, 0, 0)), End(kMax)},
    {"OpenBSD UDP somove(): larger than the drain's buffer, EMSGSIZE", U(S(O, 10, 0, EMSGSIZE, 1)), End(kError, EMSGSIZE)},
    {"OpenBSD UDP somove(): the drain's ICMP error", U(S(O, 10, 0, ECONNREFUSED, -EAGAIN)), End(kError, ECONNREFUSED)},
    {"OpenBSD UDP soidle(): idle, ETIMEDOUT", U(S(O, 10, 0, ETIMEDOUT, -EAGAIN)), End(kIdle)},
    {"OpenBSD UDP sosplice(-1) of ours went first", U(S(O, 10, 1000, 0, 1, 0, kUnsplice, true)), End(kUnsplice)},
    {"OpenBSD UDP sosplice(-1) found it ended: max, the datagram past it waiting",
     U(S(O, 900, 1000, 0, 1, 0, kUnsplice)), End(kMax)},
    {"OpenBSD UDP sosplice(-1) found it ended, nothing decisive: the end asked for",
     U(S(O, 10, 0, 0, -EAGAIN, 0, kIdle)), End(kIdle)},
    {"OpenBSD UDP sounsplice() by someone else, nothing waiting", U(S(O, 10, 0, 0, -EAGAIN)), End(kUnsplice)},
    // FreeBSD
    {"FreeBSD so_splice_xfer(): max reached, nothing recorded", S(F, 100, 100, 0, -EAGAIN), End(kMax)},
    {"FreeBSD so_splice_xfer(): max reached, bytes past it waiting", S(F, 100, 100, 0, 1), End(kMax)},
    {"FreeBSD so_splice_xfer_data(): EOF with the source empty (EPIPE, dropped)", S(F, 100, 0, 0, 0), End(kEof)},
    {"FreeBSD so_splice_xfer_data(): drain reset while bytes flow, error dropped", S(F, 50, 0, 0, 1, ECONNRESET), End(kError, ECONNRESET)},
    {"FreeBSD so_splice_xfer_data(): drain shut (EPIPE), source quiet", S(F, 50, 0, 0, -EAGAIN, EPIPE), End(kError, EPIPE)},
    {"FreeBSD soreceive_stream_locked(): the source reset", S(F, 50, 0, ECONNRESET, 0), End(kError, ECONNRESET)},
    {"FreeBSD: no end reason recorded, so ETIMEDOUT is a TCP timeout", S(F, 50, 0, ETIMEDOUT, -EAGAIN), End(kError, ETIMEDOUT)},
    {"FreeBSD: EFBIG cannot come from the splice", S(F, 50, 100, EFBIG, 1), End(kError, EFBIG)},
    {"FreeBSD so_splice_xfer_data(): EOF with the drain full ends it with bytes left: splice again",
     S(F, 50, 0, 0, 1), kAgain},
    {"FreeBSD so_splice_xfer(): a wake-up lost while running, nothing to see: splice again",
     S(F, 50, 0, 0, -EAGAIN), kAgain},
    {"FreeBSD so_unsplice() of ours went first, bytes waiting", S(F, 50, 0, 0, 1, 0, kUnsplice, true), End(kUnsplice)},
    {"FreeBSD so_unsplice() of ours went first, EOF waiting", S(F, 50, 0, 0, 0, 0, kClose, true), End(kClose)},
    {"FreeBSD so_unsplice() found it ended (ENOTCONN): the real end, EOF", S(F, 50, 0, 0, 0, 0, kUnsplice), End(kEof)},
    {"FreeBSD so_unsplice() found it ended (ENOTCONN): the real end, drain error",
     S(F, 50, 0, 0, 1, EPIPE, kUnsplice), End(kError, EPIPE)},
    {"FreeBSD so_unsplice() found it ended (ENOTCONN): nothing decisive, the end asked for",
     S(F, 50, 0, 0, 1, 0, kUnsplice), End(kUnsplice)},
    {"FreeBSD idle (the engine's, from the count), its unsplice first", S(F, 50, 0, 0, -EAGAIN, 0, kIdle, true), End(kIdle)},
    {"both: a peek that fails is the error", S(F, 50, 0, 0, -ENOTCONN), End(kError, ENOTCONN)},
};

const char* Name(Reason r) {
  static const char* names[] = {"none", "eof", "max", "idle", "unsplice", "error", "close"};
  return r >= 0 && r <= kClose ? names[r] : "?";
}

void Print(const char* label, const EndDecision& d) {
  if (d.again) return (void)std::printf("      %s: splice again\n", label);
  std::printf("      %s: %s %s\n", label, Name(d.reason), d.error ? std::strerror(d.error) : "");
}

}  // namespace

int main() {
  int failed = 0;
  for (const Row& row : rows) {
    EndDecision got = DecideEnd(row.in);
    bool ok = got.again == row.want.again &&
              (got.again || (got.reason == row.want.reason && got.error == row.want.error));
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", row.what);
    if (!ok) {
      Print("want", row.want);
      Print("got ", got);
      failed++;
    }
  }
  std::printf("%d of %zu decision rows pass\n", static_cast<int>(sizeof rows / sizeof rows[0]) - failed,
              sizeof rows / sizeof rows[0]);
  return failed == 0 ? 0 : 1;
}

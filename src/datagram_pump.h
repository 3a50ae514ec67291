// The datagram relay shared by the Linux and FreeBSD engines: batches of
// datagrams from a source socket into a drain, each datagram whole and in
// order, with no JavaScript and no allocation per datagram. The engines
// keep their own event loops and decide what an outcome means for a flow.
#pragma once

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/udp.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace sosplice {

// One flow's datagrams: its counts, and what the drain has not taken yet.
struct DatagramQueue {
  int64_t pulled = 0;     // bytes taken from the source
  int64_t datagrams = 0;  // datagrams sent to the drain
  // Datagrams the drain did not take at once, in order, until it is
  // writable again; nothing more is taken from the source meanwhile.
  std::vector<char> held;
  std::vector<size_t> held_sizes;
  bool gso = true;  // the drain takes UDP GSO sends, until it refuses one
};

struct PumpOutcome {
  enum Kind {
    kWait,      // the source is empty or the drain full: wait for an event
    kTurnOver,  // more may be waiting: come back after the other flows
    kStopped,   // `stopping` and nothing held: the flow can end
    kMax,       // the next datagram would pass max: it stays in the source
    kTooLarge,  // a datagram was too large for the drain (EMSGSIZE), dropped
    kFailed,    // a socket error, which belongs to every flow of the relay
  } kind = kWait;
  int error = 0;
  const char* syscall = "";
  bool received = false;  // a datagram came from the source (idle timing)
};

// The batch buffers, one set per engine thread.
class DatagramPump {
 public:
  DatagramPump();
  ~DatagramPump();
  DatagramPump(const DatagramPump&) = delete;
  DatagramPump& operator=(const DatagramPump&) = delete;

  // Moves datagrams from `source` to `drain` until one of the outcomes.
  // `max` (0: none) counts the payload bytes of q.pulled; with `stopping`
  // the held datagrams go first and nothing new is taken. `moved` is the
  // flow's live byte count.
  PumpOutcome Pump(int source, int drain, int64_t max, bool stopping,
                   DatagramQueue& q, std::atomic<int64_t>& moved);

 private:
  bool Receive(int source, int want, int* got, PumpOutcome* out);
  int Send(int drain, DatagramQueue& q, std::atomic<int64_t>& moved,
           iovec* datagrams, int n, PumpOutcome* out);
  void Hold(DatagramQueue& q, const iovec* datagrams, int n);
  bool SendHeld(int drain, DatagramQueue& q, std::atomic<int64_t>& moved,
                PumpOutcome* out);

  static constexpr int kBatch = 32;
  // The slots, allocated at the first use (untouched pages cost nothing).
  std::unique_ptr<char[]> slots_;
  mmsghdr msgs_[kBatch];
  iovec iovs_[kBatch];
  iovec got_[kBatch];
  // The sends built from a batch: one per datagram, or per run of one size
  // with UDP GSO, each then with its UDP_SEGMENT control message.
  mmsghdr sends_[kBatch];
  int ends_[kBatch];  // the datagram after each send's last
#ifdef UDP_SEGMENT
  alignas(cmsghdr) char controls_[kBatch][CMSG_SPACE(sizeof(uint16_t))];
#endif
};

}  // namespace sosplice

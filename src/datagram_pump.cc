// Linux and FreeBSD: recvmmsg takes a batch from the source into the
// engine thread's slots and sendmmsg passes it on. On Linux each is one
// system call per batch; FreeBSD's libc loops over recvmsg and sendmsg, one
// call per datagram, with no copy or allocation added. There is no EOF (a
// read of 0 is an empty datagram).
#include "datagram_pump.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sosplice {
namespace {

// A slot per datagram, large enough for any UDP payload.
constexpr size_t kSlot = 64 * 1024;
// Batches before yielding a turn to the other flows.
constexpr int kTurns = 32;

#ifdef UDP_SEGMENT
// A run of datagrams of one size goes to the drain as one UDP GSO send, at
// most this many and this many bytes (the IPv4 limit).
constexpr int kGsoSegments = 64;
constexpr size_t kGsoBytes = 65507;
#endif

}  // namespace

DatagramPump::DatagramPump() = default;
DatagramPump::~DatagramPump() = default;

PumpOutcome DatagramPump::Pump(int source, int drain, int64_t max,
                               bool stopping, DatagramQueue& q,
                               std::atomic<int64_t>& moved) {
  PumpOutcome out;
  if (!slots_) {
    slots_.reset(new char[kBatch * kSlot]);
    for (int i = 0; i < kBatch; i++) iovs_[i] = {slots_.get() + i * kSlot, kSlot};
  }
  for (int turn = 0; turn < kTurns; turn++) {
    if (!q.held_sizes.empty()) {
      if (!SendHeld(drain, q, moved, &out)) return out;
      if (!q.held_sizes.empty()) return out;  // kWait: until writable
      continue;
    }
    if (stopping) {
      out.kind = PumpOutcome::kStopped;
      return out;
    }
    int want = kBatch;
    if (max > 0) {
      int64_t room = max - q.pulled;
      if (room == 0) {
        out.kind = PumpOutcome::kMax;
        return out;
      }
      // A slot holds any datagram: a batch of room / kSlot cannot pass max.
      want = static_cast<int>(
          std::min<int64_t>(kBatch, room / static_cast<int64_t>(kSlot)));
      if (want == 0) {
        // Near max, one at a time: a datagram that would pass it stays in
        // the source. A peek into a slot gives its whole length.
        ssize_t next = recv(source, slots_.get(), kSlot, MSG_PEEK | MSG_DONTWAIT);
        if (next < 0 && errno == EINTR) continue;
        if (next < 0 && errno == EAGAIN) return out;
        if (next < 0) {
          out = {PumpOutcome::kFailed, errno, "recv", out.received};
          return out;
        }
        if (next > room) {
          out.kind = PumpOutcome::kMax;
          return out;
        }
        want = 1;
      }
    }
    int got = 0;
    if (!Receive(source, want, &got, &out)) return out;
    out.received = true;
    for (int i = 0; i < got; i++) {
      q.pulled += msgs_[i].msg_len;
      got_[i] = {iovs_[i].iov_base, static_cast<size_t>(msgs_[i].msg_len)};
    }
    int sent = Send(drain, q, moved, got_, got, &out);
    if (sent < 0) return out;
    Hold(q, got_ + sent, got - sent);
    if (out.kind == PumpOutcome::kTooLarge || !q.held_sizes.empty()) return out;
  }
  out.kind = PumpOutcome::kTurnOver;
  return out;
}

// False with the outcome set when nothing was received.
bool DatagramPump::Receive(int source, int want, int* got, PumpOutcome* out) {
  for (;;) {
    for (int i = 0; i < want; i++) {
      msgs_[i] = {};
      msgs_[i].msg_hdr.msg_iov = &iovs_[i];
      msgs_[i].msg_hdr.msg_iovlen = 1;
    }
    ssize_t n = recvmmsg(source, msgs_, want, MSG_DONTWAIT, nullptr);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return false;  // kWait
    if (n < 0) {
      *out = {PumpOutcome::kFailed, errno, "recvmmsg", out->received};
      return false;
    }
    *got = static_cast<int>(n);
    return true;
  }
}

// Sends datagrams[0, n) to the drain in order and returns how many of them
// are done with (sent, or dropped as too large), or -1 for a socket error
// (kFailed). Where UDP_SEGMENT exists, a run of datagrams of one size (its
// last may be shorter) goes as one UDP GSO send: one trip through the
// network stack, cut back into the same datagrams before any receiver sees
// them; a drain that refuses GSO (EINVAL, EIO: no checksum offload, a path
// MTU below the size) is sent to one datagram at a time from then on. A
// datagram too large for the drain (EMSGSIZE) is dropped after the ones
// before it have gone, and the outcome is kTooLarge.
int DatagramPump::Send(int drain, DatagramQueue& q, std::atomic<int64_t>& moved,
                       iovec* datagrams, int n, PumpOutcome* out) {
  int at = 0;
  while (at < n) {
    int m = 0;
    for (int i = at; i < n && m < kBatch; m++) {
      int first = i++;
#ifdef UDP_SEGMENT
      size_t size = datagrams[first].iov_len, total = size;
      // An empty datagram is never a segment: GSO would lose it.
      for (; q.gso && size > 0 && i < n && i - first < kGsoSegments &&
             datagrams[i].iov_len > 0 && datagrams[i].iov_len <= size &&
             total + datagrams[i].iov_len <= kGsoBytes;
           i++) {
        total += datagrams[i].iov_len;
        if (datagrams[i].iov_len < size) {
          i++;
          break;
        }
      }
#endif
      sends_[m] = {};
      msghdr& h = sends_[m].msg_hdr;
      h.msg_iov = &datagrams[first];
      h.msg_iovlen = i - first;
      ends_[m] = i;
#ifdef UDP_SEGMENT
      if (i - first == 1) continue;
      h.msg_control = controls_[m];
      h.msg_controllen = sizeof controls_[m];
      cmsghdr* c = CMSG_FIRSTHDR(&h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      uint16_t segment = static_cast<uint16_t>(size);
      std::memcpy(CMSG_DATA(c), &segment, sizeof segment);
#endif
    }
    ssize_t sent = sendmmsg(drain, sends_, m, MSG_DONTWAIT);
    if (sent > 0) {
      for (ssize_t k = 0; k < sent; k++) moved += sends_[k].msg_len;
      q.datagrams += ends_[sent - 1] - at;
      at = ends_[sent - 1];
      continue;
    }
    int error = sent < 0 ? errno : EIO;
    if (error == EINTR) continue;
    bool run = sends_[0].msg_hdr.msg_iovlen > 1;
    if (run && (error == EINVAL || error == EIO || error == EMSGSIZE)) {
      q.gso = false;
      continue;
    }
    if (error == EMSGSIZE) {
      *out = {PumpOutcome::kTooLarge, EMSGSIZE, "sendmmsg", out->received};
      at++;
      continue;
    }
    // The drain is full, or (FreeBSD, whose UDP sends never wait) the
    // interface queue: hold the rest until it is writable.
    if (error == EAGAIN || error == ENOBUFS) break;
    *out = {PumpOutcome::kFailed, error, "sendmmsg", out->received};
    return -1;
  }
  return at;
}

void DatagramPump::Hold(DatagramQueue& q, const iovec* datagrams, int n) {
  for (int i = 0; i < n; i++) {
    const char* data = static_cast<const char*>(datagrams[i].iov_base);
    q.held.insert(q.held.end(), data, data + datagrams[i].iov_len);
    q.held_sizes.push_back(datagrams[i].iov_len);
  }
}

// Sends what is held in place (never more than a batch: nothing is taken
// from the source while datagrams are held) and keeps what the drain did
// not take. False when the flow cannot go on (kFailed, kTooLarge).
bool DatagramPump::SendHeld(int drain, DatagramQueue& q,
                            std::atomic<int64_t>& moved, PumpOutcome* out) {
  int n = static_cast<int>(q.held_sizes.size());
  size_t offset = 0;
  for (int i = 0; i < n; i++) {
    got_[i] = {q.held.data() + offset, q.held_sizes[i]};
    offset += q.held_sizes[i];
  }
  int sent = Send(drain, q, moved, got_, n, out);
  if (sent < 0) return false;
  size_t bytes = 0;
  for (int i = 0; i < sent; i++) bytes += q.held_sizes[i];
  q.held.erase(q.held.begin(), q.held.begin() + bytes);
  q.held_sizes.erase(q.held_sizes.begin(), q.held_sizes.begin() + sent);
  return out->kind != PumpOutcome::kTooLarge;
}

}  // namespace sosplice

// The `so_splice` backend for OpenBSD and FreeBSD: the kernel moves the
// bytes (setsockopt SO_SPLICE); this file sets the option, watches for the
// end and finds its reason (bsd_end.cc decides it). Written from
// setsockopt(2) and the kernels' sys/kern/uipc_socket.c; compiled only where
// SO_SPLICE exists. OpenBSD's kernel splices UDP as well; FreeBSD splices TCP
// only, and there UDP relays are pumped by this engine's thread
// (datagram_pump.cc).
#include "bsd_end.h"
#ifdef __FreeBSD__
#include "datagram_pump.h"
#endif
#include "posix.h"
#include "splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/event.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <unistd.h>
#ifdef __FreeBSD__
#include <netinet/tcp.h>
#include <netinet/tcp_fsm.h>
#endif

#include <atomic>
#include <cerrno>
#include <climits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

namespace sosplice {
namespace {

#ifdef __OpenBSD__
constexpr Kernel kKernel = Kernel::kOpenBSD;
#else
constexpr Kernel kKernel = Kernel::kFreeBSD;
#endif

// FreeBSD records no end reason and its sp_idle is a lifetime limit: idle,
// and a max reached with the source quiet, are watched from the count at
// this period. OpenBSD needs no timer at all.
constexpr int kTickMs = 50;
// FreeBSD can lose the wake-up that ends a splice (so_splice_dispatch()
// drops it while the transfer runs): quiet splices are looked at this often.
constexpr int kSweepMs = 1000;

}  // namespace

class Relay;

// One flow of a relay: one SO_SPLICE, on its own duplicates of the sockets.
class Splice {
 public:
  int source = -1;  // our duplicates: Node may close or reuse its own
  int drain = -1;
  SocketId source_id, drain_id;
  int index = 0;  // the flow it is in its relay
  Options options;
  std::shared_ptr<Relay> relay;  // until it has ended: its ends go there
  Engine* engine = nullptr;
  bool datagram = false;  // UDP: spliced on OpenBSD, pumped here on FreeBSD
  // Worker thread only.
  bool ended = false;
  bool awaiting_room = false;  // spliced again (or pumped) once the drain has room
  Reason stopping = static_cast<Reason>(0);  // datagrams: take no more, then end so
  int64_t last_count = 0;     // the count when last read
  int64_t last_move = 0;
  int64_t last_sweep_count = -1;
  // Bytes() reads the count from the main thread, on the worker's
  // descriptor: the worker closes it and changes these under the mutex.
  std::mutex mutex;
  bool spliced = false;  // the kernel's count is the current splice's
  int64_t base = 0;      // moved by the earlier splices of this flow
  std::atomic<int64_t> bytes{0};  // final, once ended
#ifdef __FreeBSD__
  DatagramQueue queue;
  std::atomic<int64_t> moved{0};  // datagram bytes sent, read live
#endif
};

class Engine {
 public:
  Engine();
  ~Engine();
  void Post(const std::shared_ptr<Splice>& s, Reason stop);
  // The sockets spliced now, as sources and as drains: the kernels refuse
  // a second splice of either with EBUSY, and so does Start.
  bool Claim(Splice& s, SysError* err);
  void Unclaim(const Splice& s);
  std::atomic<int> live{0};

 private:
  void Loop();
  void Begin(Splice& s);
  int Register(Splice& s, bool room);
  void Counting(Splice& s, bool on);
  bool Fold(Splice& s);
  void End(Splice& s, Reason asked);
  void Tick(int64_t now);
  void Finish(Splice& s, Reason reason, int error,
              const char* syscall = "setsockopt");
#ifdef __FreeBSD__
  void PumpDatagrams(Splice& s);
  void DatagramEvent(Splice& s, const struct kevent& ev);
  void StopDatagrams(Splice& s, Reason reason);
  void FailDatagrams(Splice& s, int error, const char* syscall);

  DatagramPump pump_;
#endif

  int kq_ = -1;
  int wake_[2] = {-1, -1};
  std::mutex mutex_;  // the inbox and the claims
  std::vector<std::pair<std::shared_ptr<Splice>, Reason>> inbox_;
  std::set<SocketId> sources_, drains_;
  bool quit_ = false;
  std::unordered_map<Splice*, std::shared_ptr<Splice>> splices_;
  std::vector<std::shared_ptr<Splice>> ended_;  // kept until the turn ends
  int64_t next_sweep_ = 0;
  std::thread thread_;
};

// The flows between two sockets. Each is its own splice here (the kernel
// splices one way per socket); the relay reports their ends, the last one
// marked so.
class Relay {
 public:
  std::shared_ptr<Splice> flow[2];
  EndCallback on_end;
  int live = 0;  // engine thread, once running
  bool running = false;  // main thread
};

namespace {

// getsockopt(SO_SPLICE) takes an interruptible lock on FreeBSD.
int64_t SpliceCount(int fd) {
  off_t n = 0;
  socklen_t len = sizeof n;
  int r;
  do r = getsockopt(fd, SOL_SOCKET, SO_SPLICE, &n, &len);
  while (r < 0 && errno == EINTR);
  return r < 0 ? -1 : n;
}

int SetSplice(int source, int drain, int64_t max, int64_t idle_ms) {
  struct splice sp = {};
  sp.sp_fd = drain;
  sp.sp_max = drain < 0 ? 0 : max;
  // OpenBSD's sp_idle is inactivity, as promised to JavaScript; FreeBSD's
  // is a lifetime, so the engine times idle itself there.
  if (kKernel == Kernel::kOpenBSD) {
    sp.sp_idle.tv_sec = idle_ms / 1000;
    sp.sp_idle.tv_usec = (idle_ms % 1000) * 1000;
  }
  int r;
  do r = setsockopt(source, SOL_SOCKET, SO_SPLICE, &sp, sizeof sp);
  while (r < 0 && errno == EINTR);
  return r < 0 ? errno : 0;
}

int IntOption(int fd, int option, int* value) {
  socklen_t len = sizeof *value;
  return getsockopt(fd, SOL_SOCKET, option, value, &len) < 0 ? errno : 0;
}

// Whether the drain can still send: 0, or why not. FreeBSD drops the
// drain's error when it unsplices (so_splice_xfer()); the TCP state tells
// without taking the error, which the flow reading that socket needs.
// OpenBSD has already put it in the source's SO_ERROR.
int DrainError(int drain) {
#ifdef __FreeBSD__
  struct tcp_info info = {};
  socklen_t len = sizeof info;
  if (getsockopt(drain, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return errno;
  if (info.tcpi_state == TCPS_CLOSED) return ECONNRESET;
  if (info.tcpi_state != TCPS_ESTABLISHED && info.tcpi_state != TCPS_CLOSE_WAIT)
    return EPIPE;  // its write side is shut
#else
  (void)drain;
#endif
  return 0;
}

// What can be known of a socket without splicing it: the kernel's own
// refusals, at once (SPEC section 1). A datagram socket (FreeBSD) need be
// connected only to be a drain: a source receives from anyone.
bool CheckSocket(int fd, bool drain, SocketId* id, int* type, SysError* err) {
  if (!IdentifySocket(fd, id, err)) {
    if (err->error == ENOTSOCK) err->syscall = "setsockopt";
    return false;
  }
  int accepting = 0;
  if (int e = IntOption(fd, SO_ACCEPTCONN, &accepting)) {
    *err = {e, "getsockopt"};
    return false;
  }
  if (accepting) {
    *err = {kKernel == Kernel::kOpenBSD ? EOPNOTSUPP : EINVAL, "setsockopt"};
    return false;
  }
  if (int e = IntOption(fd, SO_TYPE, type)) {
    *err = {e, "getsockopt"};
    return false;
  }
  int protocol = 0;
  if (int e = IntOption(fd, SO_PROTOCOL, &protocol)) {
    *err = {e, "getsockopt"};
    return false;
  }
  bool udp = *type == SOCK_DGRAM && protocol == IPPROTO_UDP;
  if (!udp && (*type != SOCK_STREAM || protocol != IPPROTO_TCP)) {
    *err = {EPROTONOSUPPORT, "setsockopt"};
    return false;
  }
  struct sockaddr_storage peer;
  socklen_t len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) < 0) {
    *err = {errno == EINVAL ? ENOTCONN : errno, "setsockopt"};
    return udp && !drain && err->error == ENOTCONN;
  }
  return true;
}

}  // namespace

Engine::Engine() {
  kq_ = kqueue();
  if (kq_ < 0) Fatal("sosplice: kqueue");
  if (pipe(wake_) < 0) Fatal("sosplice: pipe");
  for (int fd : wake_) {
    if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
      Fatal("sosplice: fcntl");
  }
  struct kevent ev;
  EV_SET(&ev, wake_[0], EVFILT_READ, EV_ADD, 0, 0, nullptr);
  if (kevent(kq_, &ev, 1, nullptr, 0, nullptr) < 0) Fatal("sosplice: kevent");
  thread_ = StartThread([this] { Loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  char one = 1;
  if (write(wake_[1], &one, 1) < 0 && errno != EAGAIN)
    Fatal("sosplice: write");
  thread_.join();
  for (auto& [ptr, s] : splices_) {
    CloseFd(s->source);
    CloseFd(s->drain);
  }
  CloseFd(wake_[0]);
  CloseFd(wake_[1]);
  CloseFd(kq_);
}

bool Engine::Claim(Splice& s, SysError* err) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (sources_.count(s.source_id) || drains_.count(s.drain_id)) {
    *err = {EBUSY, "setsockopt"};
    return false;
  }
  sources_.insert(s.source_id);
  drains_.insert(s.drain_id);
  return true;
}

void Engine::Unclaim(const Splice& s) {
  std::lock_guard<std::mutex> lock(mutex_);
  sources_.erase(s.source_id);
  drains_.erase(s.drain_id);
}

void Engine::Post(const std::shared_ptr<Splice>& s, Reason stop) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    inbox_.emplace_back(s, stop);
  }
  char one = 1;
  if (write(wake_[1], &one, 1) < 0 && errno != EAGAIN)
    Fatal("sosplice: write");
}

void Engine::Loop() {
  struct kevent events[64];
  for (;;) {
    // FreeBSD's idle, max and lost wake-ups need a timer; OpenBSD's do not.
    bool timed = kKernel == Kernel::kFreeBSD && !splices_.empty();
    timespec tick = {0, kTickMs * 1000000L};
    int n = kevent(kq_, nullptr, 0, events, 64, timed ? &tick : nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fatal("sosplice: kevent");
    }
    for (int i = 0; i < n; i++) {
      auto* s = static_cast<Splice*>(events[i].udata);
      if (s != nullptr) {
        if (s->ended) continue;
#ifdef __FreeBSD__
        if (s->datagram) {
          DatagramEvent(*s, events[i]);
          continue;
        }
#endif
        if (events[i].filter == EVFILT_READ) {
          // While spliced the source never turns readable: when it does,
          // the splice has ended (data, EOF or an error are waiting).
          End(*s, static_cast<Reason>(0));
        } else if (s->awaiting_room &&
                   !(events[i].flags & EV_EOF) && events[i].fflags == 0) {
          Begin(*s);
        } else {
          End(*s, static_cast<Reason>(0));  // the drain failed
        }
        continue;
      }
      char buf[64];
      while (read(wake_[0], buf, sizeof buf) > 0) {
      }
      std::vector<std::pair<std::shared_ptr<Splice>, Reason>> inbox;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (quit_) return;
        inbox.swap(inbox_);
      }
      for (auto& [s, stop] : inbox) {
        if (s->ended) continue;
        if (stop != 0) {
          if (!splices_.count(s.get()))
            Finish(*s, stop, 0);
#ifdef __FreeBSD__
          else if (s->datagram)
            StopDatagrams(*s, stop);
#endif
          else
            End(*s, stop);
          continue;
        }
        splices_[s.get()] = s;
        s->last_move = NowMs();
        Begin(*s);
      }
    }
    if (kKernel == Kernel::kFreeBSD) Tick(NowMs());
    ended_.clear();
  }
}

// Splices with what is left of max (all of it the first time), and watches
// for the end.
void Engine::Begin(Splice& s) {
  s.awaiting_room = false;
#ifdef __FreeBSD__
  if (s.datagram) {
    if (int error = Register(s, false)) return Finish(s, kError, error, "kevent");
    return PumpDatagrams(s);  // datagrams may be waiting already
  }
#endif
  int64_t max = s.options.max > 0 ? s.options.max - s.base : 0;
  if (int error = SetSplice(s.source, s.drain, max, s.options.idle_ms))
    return Finish(s, kError, error);
  Counting(s, true);
  s.last_count = 0;
  s.last_sweep_count = -1;
  if (int error = Register(s, false)) {
    SetSplice(s.source, -1, 0, 0);
    Fold(s);
    Finish(s, kError, error);
  }
}

// The flow's kqueue registrations: its source, and on FreeBSD its drain,
// watched with NOTE_LOWAT above any send buffer so that it fires only when
// the drain has an error or can send no more. Waiting for room (`room`),
// the source is off and the drain fires once there is room to go on.
int Engine::Register(Splice& s, bool room) {
  struct kevent ev[2];
  EV_SET(&ev[0], s.source, EVFILT_READ, EV_ADD | (room ? EV_DISABLE : EV_ENABLE),
         0, 0, &s);
  int changes = 1;
  if (kKernel == Kernel::kFreeBSD) {
    EV_SET(&ev[1], s.drain, EVFILT_WRITE, EV_ADD | (room ? EV_ONESHOT : 0),
           room ? 0 : NOTE_LOWAT, room ? 0 : INTPTR_MAX, &s);
    changes = 2;
  }
  return kevent(kq_, ev, changes, nullptr, 0, nullptr) < 0 ? errno : 0;
}

// Whether the kernel's count is the current splice's, not yet in `base`.
void Engine::Counting(Splice& s, bool on) {
  std::lock_guard<std::mutex> lock(s.mutex);
  s.spliced = on;
}

// Adds the ended splice's count to `base`; false if it cannot be read.
bool Engine::Fold(Splice& s) {
  int64_t count = SpliceCount(s.source);
  if (count < 0) return false;
  std::lock_guard<std::mutex> lock(s.mutex);
  s.base += count;
  s.spliced = false;
  return true;
}

// The splice has ended, or the engine ends it (`asked`): find why.
void Engine::End(Splice& s, Reason asked) {
  EndSignals in;
  in.kernel = kKernel;
  in.datagram = s.datagram;
  in.asked = asked;
  if (s.spliced) {
    // The kernel says ENOTCONN (FreeBSD) or EPROTO (OpenBSD) when it had
    // already ended it: then the real reason is found below. On FreeBSD a
    // drain failure or a lost wake-up can leave it on: take it off.
    int refused = asked != 0 || kKernel == Kernel::kFreeBSD ? SetSplice(s.source, -1, 0, 0) : -1;
    in.asked_first = asked != 0 && refused == 0;
    if (!Fold(s)) return Finish(s, kError, errno);
  }
  in.count = s.base;
  in.max = s.options.max;
  // Read, and so cleared, whatever the end: left there, the owner's next
  // read would fail with it (OpenBSD's EFBIG after max).
  if (int e = IntOption(s.source, SO_ERROR, &in.so_error))
    return Finish(s, kError, e);
  char byte;
  ssize_t peeked;
  do peeked = recv(s.source, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  while (peeked < 0 && errno == EINTR);
  in.peek = peeked >= 0 ? static_cast<int>(peeked) : -errno;
  in.drain_error = DrainError(s.drain);
  EndDecision d = DecideEnd(in);
  if (!d.again) return Finish(s, d.reason, d.error);
  // Go on once the drain has room: at once on OpenBSD, whose short splice
  // left room, and on FreeBSD when a poll says so.
  pollfd p = {s.drain, POLLOUT, 0};
  if (kKernel == Kernel::kOpenBSD || (poll(&p, 1, 0) == 1 && p.revents == POLLOUT))
    return Begin(s);
  s.awaiting_room = true;
  if (int error = Register(s, true)) Finish(s, kError, error);
}

// FreeBSD: idle and max from the count, for the splices that have them, and
// now and then every quiet splice for an end whose wake-up was lost.
void Engine::Tick(int64_t now) {
  bool sweep = now >= next_sweep_;
  if (sweep) next_sweep_ = now + kSweepMs;
  std::vector<Splice*> all;
  for (auto& [ptr, s] : splices_)
    if (sweep || s->options.idle_ms > 0 || s->options.max > 0) all.push_back(ptr);
  for (Splice* s : all) {
    if (s->ended) continue;
#ifdef __FreeBSD__
    // A datagram relay has only idle to time; an unsplice waiting for the
    // drain to take what is held is not idle.
    if (s->datagram) {
      if (s->options.idle_ms > 0 && s->stopping == 0 &&
          now - s->last_move >= s->options.idle_ms)
        StopDatagrams(*s, kIdle);
      continue;
    }
#endif
    // Waiting for a drain that does not read is inactivity too.
    if (s->awaiting_room) {
      if (s->options.idle_ms > 0 && now - s->last_move >= s->options.idle_ms)
        End(*s, kIdle);
      continue;
    }
    if (!s->spliced) continue;
    int64_t count = SpliceCount(s->source);
    if (count < 0) {
      Finish(*s, kError, errno);
      continue;
    }
    if (count != s->last_count) {
      s->last_count = count;
      s->last_move = now;
    }
    if (s->options.max > 0 && s->base + count >= s->options.max) {
      End(*s, static_cast<Reason>(0));
    } else if (s->options.idle_ms > 0 && now - s->last_move >= s->options.idle_ms) {
      End(*s, kIdle);
    } else if (sweep) {
      bool quiet = count == s->last_sweep_count;
      s->last_sweep_count = count;
      if (!quiet) continue;
      // A source that has seen EOF with nothing left to move, or a drain
      // that can send no more: over, whether or not the kernel noticed.
      pollfd p = {s->source, POLLIN, 0};
      int pending = 0;
      bool eof = poll(&p, 1, 0) == 1 && ioctl(s->source, FIONREAD, &pending) == 0 &&
                 pending == 0;
      if (eof || DrainError(s->drain) != 0) End(*s, static_cast<Reason>(0));
    }
  }
}

void Engine::Finish(Splice& s, Reason reason, int error, const char* syscall) {
  if (s.ended) return;
  if (reason == kEof && s.options.end && shutdown(s.drain, SHUT_WR) < 0 &&
      errno != ENOTCONN) {
    reason = kError;
    error = errno;
  }
  s.ended = true;
  Result result;
  if (s.datagram) {
#ifdef __FreeBSD__
    s.base = s.moved;
    result.datagrams = s.queue.datagrams;
#else
    result.datagrams = -1;  // OpenBSD's kernel counts bytes only
#endif
  }
  {
    // Closing our duplicates drops their kqueue registrations with them.
    std::lock_guard<std::mutex> lock(s.mutex);
    s.bytes = s.base;
    CloseFd(s.source);
    CloseFd(s.drain);
    s.source = s.drain = -1;
  }
  Unclaim(s);
  auto it = splices_.find(&s);
  if (it != splices_.end()) {
    ended_.push_back(it->second);
    splices_.erase(it);
  }
  live--;
  result.flow = s.index;
  result.bytes = s.base;
  result.reason = reason;
  result.error = error;
  result.syscall = reason == kError ? syscall : "";
  // A splice holds its relay until it has ended; the relay keeps its
  // splices as long as JavaScript holds it: the main thread reads them
  // (Bytes, Run, Stop), so they must not change under it.
  std::shared_ptr<Relay> relay = std::move(s.relay);
  bool last = --relay->live == 0;
  result.last = last;
  relay->on_end(std::move(result));
  if (last) relay->on_end = nullptr;
}

#ifdef __FreeBSD__
// UDP (datagram_pump.cc). What the drain does not take at once is held and
// the source set aside until the drain has room; an unsplice waits for it,
// other ends drop it.
void Engine::PumpDatagrams(Splice& s) {
  PumpOutcome o = pump_.Pump(s.source, s.drain, s.options.max, s.stopping != 0,
                             s.queue, s.moved);
  if (o.received) s.last_move = NowMs();
  switch (o.kind) {
    case PumpOutcome::kWait:
      if (s.queue.held_sizes.empty() || s.awaiting_room) return;
      s.awaiting_room = true;
      if (int error = Register(s, true)) Finish(s, kError, error, "kevent");
      return;
    case PumpOutcome::kTurnOver:
      return;  // kqueue is level-triggered: the source fires again
    case PumpOutcome::kStopped:
      return Finish(s, s.stopping, 0);
    case PumpOutcome::kMax:
      return Finish(s, kMax, 0);
    case PumpOutcome::kTooLarge:
      return Finish(s, kError, o.error, o.syscall);
    case PumpOutcome::kFailed:
      return FailDatagrams(s, o.error, o.syscall);
  }
}

// The source is readable; or the drain has room again (awaiting_room), or
// else has an error or can send no more: its watch (Register) ignores room.
void Engine::DatagramEvent(Splice& s, const struct kevent& ev) {
  if (ev.filter == EVFILT_WRITE && !s.awaiting_room) {
    int error = 0;
    if (int e = IntOption(s.drain, SO_ERROR, &error)) error = e;
    // An ICMP error (ECONNREFUSED) on a connected socket: already taken if
    // zero, by a send or receive of this relay, which then ended it.
    if (error != 0) return FailDatagrams(s, error, "recvmsg");
    if (ev.flags & EV_EOF) Finish(s, kError, EPIPE, "sendmsg");
    return;
  }
  if (ev.filter == EVFILT_WRITE) {
    s.awaiting_room = false;
    if (int error = Register(s, false)) return Finish(s, kError, error, "kevent");
  }
  PumpDatagrams(s);
}

// An unsplice (or idle) lets the held datagrams go first; a close ends at
// once, one of the sockets being gone.
void Engine::StopDatagrams(Splice& s, Reason reason) {
  if (reason == kClose) return Finish(s, kClose, 0);
  s.stopping = reason;
  if (!s.awaiting_room) PumpDatagrams(s);
}

// A socket error belongs to the relay, not to the flow that happens to read
// or write first: every flow still going ends with it.
void Engine::FailDatagrams(Splice& s, int error, const char* syscall) {
  std::shared_ptr<Relay> relay = s.relay;
  std::shared_ptr<Splice> flows[2] = {relay->flow[0], relay->flow[1]};
  for (auto& flow : flows)
    if (flow && !flow->ended) Finish(*flow, kError, error, syscall);
}
#endif

std::unique_ptr<Engine, void (*)(Engine*)> CreateEngine() {
  return {new Engine(), [](Engine* e) { delete e; }};
}

const char* BackendName() { return "so_splice"; }

std::shared_ptr<Relay> Start(Engine& engine, RelaySpec spec,
                             EndCallback on_end, SysError* err) {
  SocketId id[2];
  int type[2];
  for (int i = 0; i < 2; i++) {
    if (!CheckSocket(spec.fd[i], spec.flow[1 - i].on, &id[i], &type[i], err))
      return nullptr;
  }
  // The kernel splices the source's bytes only.
  if (!spec.prefix[0].empty() || !spec.prefix[1].empty()) {
    *err = {EINVAL, "setsockopt"};
    return nullptr;
  }
  // TCP with TCP, UDP with UDP.
  if (type[0] != type[1]) {
    *err = {EPROTONOSUPPORT, "setsockopt"};
    return nullptr;
  }
  if (id[0] == id[1]) {
    *err = {EINVAL, "setsockopt"};
    return nullptr;
  }
  auto relay = std::make_shared<Relay>();
  auto undo = [&] {
    for (auto& done : relay->flow) {
      if (!done) continue;
      engine.Unclaim(*done);
      CloseFd(done->source);
      CloseFd(done->drain);
      engine.live--;
    }
    return nullptr;
  };
  for (int f = 0; f < 2; f++) {
    if (!spec.flow[f].on) continue;
    auto s = std::make_shared<Splice>();
    s->source_id = id[f];
    s->drain_id = id[1 - f];
    if (!engine.Claim(*s, err)) return undo();
    if (!DupBoth(spec.fd[f], spec.fd[1 - f], &s->source, &s->drain, err)) {
      engine.Unclaim(*s);
      return undo();
    }
    s->index = f;
    s->datagram = type[0] == SOCK_DGRAM;
    s->options = spec.flow[f];
    s->engine = &engine;
    engine.live++;
    relay->flow[f] = s;
    relay->live++;
  }
  for (auto& s : relay->flow)
    if (s) s->relay = relay;
  relay->on_end = std::move(on_end);
  return relay;
}

void Run(const std::shared_ptr<Relay>& relay) {
  if (relay->running) return;
  relay->running = true;
  for (auto& s : relay->flow)
    if (s) s->engine->Post(s, static_cast<Reason>(0));
}

void Stop(const std::shared_ptr<Relay>& relay, Reason reason) {
  relay->running = true;
  for (auto& s : relay->flow)
    if (s) s->engine->Post(s, reason);
}

// The count now: read from the kernel while the flow is on.
int64_t Bytes(const Relay& relay, int flow) {
  Splice* s = relay.flow[flow].get();
  if (!s) return 0;
#ifdef __FreeBSD__
  if (s->datagram) return s->moved;
#endif
  std::lock_guard<std::mutex> lock(s->mutex);
  if (s->source < 0) return s->bytes;
  if (!s->spliced) return s->base;
  int64_t count = SpliceCount(s->source);
  return s->base + (count > 0 ? count : 0);
}

Stats GetStats(Engine& engine) {
  Stats stats;
  stats.workers = 1;
  stats.relays = engine.live;  // here: live flows
  stats.descriptors = 3;  // the kqueue and the wake-up pipe
  return stats;
}

}  // namespace sosplice

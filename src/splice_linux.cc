// The Linux `pipe` backend: splice(2) socket -> pipe -> socket, driven by
// worker threads with one epoll loop each. A relay (one or both directions
// between two sockets) is assigned to a worker when it starts and stays
// there (FreeBSD's design): the least loaded one, or the one already moving
// bytes through either of its sockets.
#include "datagram_pump.h"
#include "posix.h"
#include "splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>

namespace sosplice {
namespace {

constexpr size_t kPoolMax = 64;  // idle pipes kept per worker
constexpr int kTurn = 32;        // splice calls before yielding a turn
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

// Pipe sizes. A pipe starts at the kernel's default size and grows fourfold
// each time a read fills it, up to what Go uses, while the engine's pipes
// stay within its budget; past the budget new pipes get the least size.
constexpr int kMinPipe = 16 * 1024;
constexpr int kMaxPipe = 1024 * 1024;
constexpr int kPipeGrowth = 4;

struct Pipe {
  int r = -1;
  int w = -1;
  int capacity = 0;
  bool grow = true;  // false once the kernel refused to grow it
};

// A socket held by live flows, as source, drain or both.
struct Claim {
  bool source = false;
  bool drain = false;
  int worker = 0;  // where its flows run
  bool made_nonblocking = false;  // by the engine, to be undone at the end
  bool reset = false;  // a flow writing into it met ECONNRESET
};

// Half the per-user pipe limit, in bytes: the user's other pipes, in this
// process or another, need the rest. Past that limit the kernel refuses to
// grow pipes and makes new ones 8 KiB.
int64_t PipeBudget() {
  int64_t pages = 0;
  if (FILE* f = std::fopen("/proc/sys/fs/pipe-user-pages-soft", "re")) {
    if (std::fscanf(f, "%" SCNd64, &pages) != 1) pages = 0;
    std::fclose(f);
  }
  // No limit (0) or an unknown one: the kernel's default limit.
  if (pages <= 0) pages = 16384;
  return pages * sysconf(_SC_PAGESIZE) / 2;
}

}  // namespace

class Relay;

// What the workers and the relays share, engine-wide: the sockets in use
// and the pipe budget. Every relay holds it, so it outlives the engine while
// a relay does (one that never ran, still held by JavaScript).
class Shared {
 public:
  // Sockets and loads, under the mutex.
  std::mutex mutex;
  std::map<SocketId, Claim> claims;
  std::vector<int> loads;  // live relays per worker

  // Records `fd`'s socket in its roles. The first flow to hold a blocking
  // socket makes it non-blocking: splice(2) would block the worker. Node's
  // sockets (`nonblocking`) are so already: libuv opens them that way.
  bool Join(const SocketId& id, int fd, bool source, bool drain, int worker,
            bool nonblocking, SysError* err);
  // Undoes Join for one role; the last role to leave restores the blocking
  // mode.
  bool Leave(const SocketId& id, int fd, bool Claim::*role, SysError* err);

  // A socket has one pending error, and the first call to meet it takes it:
  // when a flow writing into a reset socket takes the ECONNRESET, the flow
  // reading from it would see a plain EOF. The writer records the reset here
  // for the reader, which runs on the same worker (see Place), so the record
  // is always made before the reader looks. The writer may see only EPIPE: a
  // splice(2) that wrote some bytes before meeting the reset returns their
  // count, and the ECONNRESET it took is lost.
  void MarkReset(const SocketId& id);
  bool WasReset(const SocketId& id);

  // Pipes, counted atomically by every worker.
  const int64_t budget = PipeBudget();
  const int default_pipe = 16 * sysconf(_SC_PAGESIZE);  // the kernel's
  std::atomic<int> pipes{0};              // open, in use or pooled
  std::atomic<int64_t> pipe_bytes{0};     // their capacity
  std::atomic<int> resizes_refused{0};    // F_SETPIPE_SZ failures
  std::atomic<int> pipes_undersized{0};   // new pipes left below the size wanted

  bool OpenPipe(Pipe* p, SysError* err);
  bool Resize(Pipe* p, int size);
  void Grow(Pipe* p);
  void ClosePipe(Pipe* p);
};

class Worker;

// One of the relay's two sockets, as its epoll registration sees it.
struct Side {
  int fd = -1;  // our duplicate: Node may close or reuse its own
  SocketId id;
  Relay* relay = nullptr;
  int index = 0;
  bool registered = false;  // in the worker's epoll set
};

// One direction: side `i` into side `1 - i`.
struct Flow {
  Options options;
  bool claimed = false;  // holds its sockets' source and drain roles
  // Touched only by the worker thread.
  Pipe pipe;
  size_t in_flight = 0;  // bytes in the pipe: out of the source, not yet in the drain
  DatagramQueue queue;   // datagram relays: counts and held datagrams
  std::vector<char> prefix;  // for the drain before the source's bytes
  size_t prefix_at = 0;      // how much of it has gone into the pipe
  int64_t pulled = 0;  // bytes taken from the source
  int64_t last_move = 0;
  Reason stopping = static_cast<Reason>(0);  // pull no more, then end so
  bool ended = true;    // until it runs, if it is on
  bool queued = false;  // in the worker's ready list
  bool reported = false;  // its end has gone to JavaScript
  Result result;

  std::atomic<int64_t> moved{0};  // bytes written to the drain
};

class Relay {
 public:
  explicit Relay(std::shared_ptr<Shared> shared) : shared(std::move(shared)) {
    for (int i = 0; i < 2; i++) side[i] = Side{-1, {}, this, i, false};
  }
  ~Relay() { Release(); }

  // Gives up flow `f`'s roles in its sockets; a socket whose last role goes
  // is back in its blocking mode. Reports a failure to restore it.
  SysError Leave(int f);
  // Gives the sockets back and closes every descriptor the relay still
  // holds. Run by whoever owns the relay: the main thread until Run() or
  // Stop(), then its worker.
  void Release();

  int Source(int f) const { return side[f].fd; }
  int Drain(int f) const { return side[1 - f].fd; }
  bool Live() const { return !flow[0].ended || !flow[1].ended; }

  const std::shared_ptr<Shared> shared;
  Side side[2];
  Flow flow[2];
  EndCallback on_end;
  Worker* worker = nullptr;
  int worker_index = -1;  // >= 0 while counted in the worker's load
  bool running = false;   // main thread: handed to the worker
  bool ended = false;     // worker: every flow has ended
  bool datagram = false;  // UDP sockets: datagrams, not a byte stream
  bool nodes = false;     // Node's sockets (RelaySpec::checked): non-blocking
};

namespace {

struct Command {
  std::shared_ptr<Relay> relay;
  bool add;     // the worker takes it over
  Reason stop;  // 0, or the end asked for
};

}  // namespace

class Worker {
 public:
  // Null, with the reason in *err, if the system is short of descriptors or
  // threads.
  static std::unique_ptr<Worker> Start(Shared& shared, SysError* err);
  ~Worker();
  void Post(Command command);

  std::atomic<int> pooled{0};

 private:
  explicit Worker(Shared& shared) : shared_(shared) {}
  void Run();
  void Handle(const Command& c);
  void Add(const std::shared_ptr<Relay>& r);
  void Request(Relay& r, int f, Reason reason);
  void Pump(Relay& r, int f);
  void PumpDatagrams(Relay& r, int f);
  void DatagramEvent(Relay& r, int i, uint32_t events);
  void FailDatagrams(Relay& r, int error, const char* syscall);
  void DrainFailed(Relay& r, int f);
  void Finish(Relay& r, int f, Reason reason, int error, const char* syscall,
              bool drain_failed);
  void End(Relay& r);
  bool AcquirePipe(Flow& flow, SysError* err);
  void ReleasePipe(Flow& flow);
  int IdleTimeout();
  void CheckIdle();

  Shared& shared_;
  int epoll_ = -1;
  int wake_ = -1;
  std::mutex mutex_;
  std::vector<Command> inbox_;
  bool quit_ = false;

  std::unordered_map<Relay*, std::shared_ptr<Relay>> live_;
  std::vector<std::pair<std::shared_ptr<Relay>, int>> ready_;  // relay, flow
  std::vector<std::shared_ptr<Relay>> ended_;  // kept until the turn ends
  std::vector<Pipe> pool_;
  DatagramPump pump_;  // the datagram batch, for every datagram relay here
  int64_t next_idle_check_ = INT64_MAX;
  int64_t now_ = 0;  // read once per turn: idle is timed in milliseconds
  std::thread thread_;
};

class Engine {
 public:
  // The workers release what they hold as they stop.
  ~Engine() { workers_.clear(); }

  const std::shared_ptr<Shared>& shared() const { return shared_; }

  // Claims the relay's sockets and picks its worker, starting the workers
  // at the first relay (again after a failed start).
  bool Place(Relay& r, SysError* err) {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    auto& claims = shared_->claims;
    decltype(claims.begin()) found[2];
    int worker = -1;
    for (int i = 0; i < 2; i++) {
      found[i] = claims.find(r.side[i].id);
      if (found[i] == claims.end()) continue;
      // One source per drain and one drain per source, as the kernels enforce.
      if ((r.flow[i].options.on && found[i]->second.source) ||
          (r.flow[1 - i].options.on && found[i]->second.drain)) {
        *err = {EBUSY, "splice"};
        return false;
      }
      // Every flow through a socket on one worker, for MarkReset.
      if (worker < 0) worker = found[i]->second.worker;
    }
    if (workers_.empty() && !StartWorkers(err)) return false;
    if (worker < 0) worker = LeastLoaded();
    for (int i = 0; i < 2; i++) {
      if (!shared_->Join(r.side[i].id, r.side[i].fd, r.flow[i].options.on,
                         r.flow[1 - i].options.on, worker, r.nodes, err)) {
        if (i == 1) {  // undo side 0; the error reported is the Join's
          SysError ignored;
          if (r.flow[0].options.on)
            shared_->Leave(r.side[0].id, r.side[0].fd, &Claim::source, &ignored);
          if (r.flow[1].options.on)
            shared_->Leave(r.side[0].id, r.side[0].fd, &Claim::drain, &ignored);
        }
        return false;
      }
    }
    for (Flow& flow : r.flow) flow.claimed = flow.options.on;
    shared_->loads[worker]++;
    r.worker_index = worker;
    r.worker = workers_[worker].get();
    return true;
  }

  Stats GetStats() {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    Stats stats;
    stats.workers = static_cast<int>(workers_.size());
    for (size_t i = 0; i < workers_.size(); i++) {
      stats.relays += shared_->loads[i];
      stats.pooled_pipes += workers_[i]->pooled;
    }
    // An epoll and an eventfd per worker, two per pooled pipe.
    stats.descriptors = 2 * stats.workers + 2 * stats.pooled_pipes;
    stats.pipes = shared_->pipes;
    stats.pipe_bytes = shared_->pipe_bytes;
    stats.pipe_budget = shared_->budget;
    stats.pipe_resizes_refused = shared_->resizes_refused;
    stats.pipes_undersized = shared_->pipes_undersized;
    return stats;
  }

 private:
  // All workers or none: a failed start is tried again at the next relay.
  bool StartWorkers(SysError* err) {
    unsigned n = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::unique_ptr<Worker>> workers;
    for (unsigned i = 0; i < n; i++) {
      workers.push_back(Worker::Start(*shared_, err));
      if (!workers.back()) return false;
    }
    workers_ = std::move(workers);
    shared_->loads.assign(n, 0);
    return true;
  }

  int LeastLoaded() {
    auto& loads = shared_->loads;
    return static_cast<int>(std::min_element(loads.begin(), loads.end()) -
                            loads.begin());
  }

  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  std::vector<std::unique_ptr<Worker>> workers_;  // under shared_->mutex
};

bool Shared::Join(const SocketId& id, int fd, bool source, bool drain,
                  int worker, bool nonblocking, SysError* err) {
  if (!source && !drain) return true;
  auto [it, fresh] = claims.try_emplace(id);
  Claim& claim = it->second;
  if (fresh) claim.worker = worker;
  if (fresh && !nonblocking) {
    int flags = fcntl(fd, F_GETFL);
    claim.made_nonblocking = flags >= 0 && !(flags & O_NONBLOCK);
    if (flags < 0 || (claim.made_nonblocking &&
                      fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
      *err = {errno, "fcntl"};
      claims.erase(it);
      return false;
    }
  }
  claim.source |= source;
  claim.drain |= drain;
  return true;
}

bool Shared::Leave(const SocketId& id, int fd, bool Claim::*role,
                   SysError* err) {
  auto it = claims.find(id);
  Claim& claim = it->second;
  claim.*role = false;
  if (claim.source || claim.drain) return true;
  bool restore = claim.made_nonblocking;
  claims.erase(it);
  if (!restore) return true;
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    *err = {errno, "fcntl"};
    return false;
  }
  return true;
}
void Shared::MarkReset(const SocketId& id) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = claims.find(id);
  if (it != claims.end() && it->second.source) it->second.reset = true;
}

bool Shared::WasReset(const SocketId& id) {
  std::lock_guard<std::mutex> lock(mutex);
  auto it = claims.find(id);
  return it != claims.end() && it->second.reset;
}

bool Shared::OpenPipe(Pipe* p, SysError* err) {
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
    *err = {errno, "pipe2"};
    return false;
  }
  int size = fcntl(fds[1], F_GETPIPE_SZ);
  if (size < 0) {
    *err = {errno, "fcntl"};
    CloseFd(fds[0]);
    CloseFd(fds[1]);
    return false;
  }
  *p = Pipe{fds[0], fds[1], size};
  pipes++;
  pipe_bytes += size;
  // Two workers may pass this check at once: the budget is kept to within a
  // pipe or two, well inside the kernel's limit.
  int want = pipe_bytes <= budget ? default_pipe : kMinPipe;
  // The kernel makes a pipe smaller than its default only when the user is
  // past its limit, and then refuses to grow it.
  if (size != want && !Resize(p, want) && size < want) pipes_undersized++;
  return true;
}

// A refusal leaves the pipe as it was.
bool Shared::Resize(Pipe* p, int size) {
  int got = fcntl(p->w, F_SETPIPE_SZ, size);
  if (got < 0) {
    resizes_refused++;
    return false;
  }
  pipe_bytes += got - p->capacity;
  p->capacity = got;
  return true;
}

// For a pipe a read has just filled: a larger one moves more per call.
void Shared::Grow(Pipe* p) {
  if (!p->grow || p->capacity >= kMaxPipe) return;
  int size = std::min(p->capacity * kPipeGrowth, kMaxPipe);
  if (pipe_bytes + (size - p->capacity) > budget) return;
  if (!Resize(p, size)) p->grow = false;
}

void Shared::ClosePipe(Pipe* p) {
  if (p->r < 0) return;
  CloseFd(p->r);
  CloseFd(p->w);
  pipes--;
  pipe_bytes -= p->capacity;
  *p = Pipe{};
}

SysError Relay::Leave(int f) {
  SysError err;
  Flow& flow = this->flow[f];
  if (!flow.claimed) return err;
  flow.claimed = false;
  std::lock_guard<std::mutex> lock(shared->mutex);
  shared->Leave(side[f].id, Source(f), &Claim::source, &err);
  shared->Leave(side[1 - f].id, Drain(f), &Claim::drain, &err);
  return err;
}

void Relay::Release() {
  for (int f = 0; f < 2; f++) Leave(f);
  if (worker_index >= 0) {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->loads[worker_index]--;
    worker_index = -1;
  }
  for (Side& s : side) {
    CloseFd(s.fd);
    s.fd = -1;
  }
  for (Flow& flow : this->flow) {
    shared->ClosePipe(&flow.pipe);
    flow.in_flight = 0;
  }
}

std::unique_ptr<Worker> Worker::Start(Shared& shared, SysError* err) {
  std::unique_ptr<Worker> w(new Worker(shared));
  w->epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->epoll_ < 0) {
    *err = {errno, "epoll_create1"};
    return nullptr;
  }
  w->wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (w->wake_ < 0) {
    *err = {errno, "eventfd"};
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up descriptor
  if (epoll_ctl(w->epoll_, EPOLL_CTL_ADD, w->wake_, &ev) < 0) {
    *err = {errno, "epoll_ctl"};
    return nullptr;
  }
  try {
    w->thread_ = StartThread([worker = w.get()] { worker->Run(); });
  } catch (const std::system_error& e) {
    *err = {e.code().value(), "pthread_create"};
    return nullptr;
  }
  return w;
}

// Writing to an eventfd fails only when its counter is full (EAGAIN), and
// then a wake-up is pending anyway.
void Wake(int eventfd) {
  uint64_t one = 1;
  if (write(eventfd, &one, sizeof one) < 0 && errno != EAGAIN)
    Fatal("sosplice: eventfd write");
}

Worker::~Worker() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    Wake(wake_);
    thread_.join();
  }
  // The environment is going away: close what is left without reporting,
  // also for the relays still waiting in the inbox.
  for (Command& c : inbox_) c.relay->Release();
  for (auto& [ptr, r] : live_) r->Release();
  for (Pipe& p : pool_) shared_.ClosePipe(&p);
  CloseFd(wake_);
  CloseFd(epoll_);
}

// Only the first command into an empty inbox wakes the worker: it takes the
// whole inbox at once, so later ones ride on that wake-up.
void Worker::Post(Command command) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    was_empty = inbox_.empty();
    inbox_.push_back(std::move(command));
  }
  if (was_empty) Wake(wake_);
}

constexpr uint32_t kReadable = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
constexpr uint32_t kWritable = EPOLLOUT | EPOLLHUP | EPOLLERR;

void Worker::Run() {
  epoll_event events[128];
  for (;;) {
    int n = epoll_wait(epoll_, events, 128, ready_.empty() ? IdleTimeout() : 0);
    // epoll_wait fails only for a bad descriptor or argument.
    if (n < 0) {
      if (errno == EINTR) continue;
      Fatal("sosplice: epoll_wait");
    }
    now_ = NowMs();
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        uint64_t count;
        // An eventfd read fails only when there is nothing to read.
        if (read(wake_, &count, sizeof count) < 0 && errno != EAGAIN)
          Fatal("sosplice: eventfd read");
        std::vector<Command> inbox;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (quit_) return;
          inbox.swap(inbox_);
        }
        for (Command& c : inbox) Handle(c);
        continue;
      }
      // One registration per socket: it may be the source of one flow and
      // the drain of the other. A drain matters only with bytes to take.
      Side& side = *static_cast<Side*>(events[i].data.ptr);
      Relay& r = *side.relay;
      if (r.datagram) {
        DatagramEvent(r, side.index, events[i].events);
        continue;
      }
      Flow& from = r.flow[side.index];
      Flow& into = r.flow[1 - side.index];
      if (!from.ended && (events[i].events & kReadable)) Pump(r, side.index);
      if (into.ended) continue;
      if (into.in_flight > 0 && (events[i].events & kWritable))
        Pump(r, 1 - side.index);
      else if (events[i].events & (EPOLLERR | EPOLLHUP))
        DrainFailed(r, 1 - side.index);
    }
    std::vector<std::pair<std::shared_ptr<Relay>, int>> ready;
    ready.swap(ready_);
    for (auto& [r, f] : ready) {
      r->flow[f].queued = false;
      if (!r->flow[f].ended) Pump(*r, f);
    }
    CheckIdle();
    ended_.clear();
  }
}

void Worker::Handle(const Command& c) {
  Relay& r = *c.relay;
  if (c.add) {
    live_[&r] = c.relay;
    for (Flow& flow : r.flow) flow.ended = !flow.options.on;
    // Stopped before it ran: end without moving a byte.
    if (c.stop != 0) {
      for (int f = 0; f < 2; f++)
        if (!r.flow[f].ended) Finish(r, f, c.stop, 0, "", false);
      return;
    }
    return Add(c.relay);
  }
  for (int f = 0; f < 2; f++)
    if (!r.flow[f].ended) Request(r, f, c.stop);
}

void Worker::Add(const std::shared_ptr<Relay>& r) {
  for (Flow& flow : r->flow) {
    flow.last_move = now_;
    if (flow.options.on && flow.options.idle_ms > 0)
      next_idle_check_ =
          std::min(next_idle_check_, now_ + flow.options.idle_ms);
  }
  // Edge-triggered: the loop below always runs each side to EAGAIN.
  for (int i = 0; i < 2; i++) {
    Side& side = r->side[i];
    epoll_event ev{};
    ev.data.ptr = &side;
    ev.events = EPOLLET;
    if (r->flow[i].options.on) ev.events |= EPOLLIN | EPOLLRDHUP;
    if (r->flow[1 - i].options.on) ev.events |= EPOLLOUT;
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, side.fd, &ev) < 0) {
      int error = errno;
      for (int f = 0; f < 2; f++)
        if (!r->flow[f].ended) Finish(*r, f, kError, error, "epoll_ctl", false);
      return;
    }
    side.registered = true;
  }
  // Data may already be waiting in the sources.
  for (int f = 0; f < 2; f++)
    if (!r->flow[f].ended) Pump(*r, f);
}

// An unsplice lets what is in the pipe reach the drain first; a close ends
// at once, since one of the sockets is gone.
void Worker::Request(Relay& r, int f, Reason reason) {
  if (reason == kClose) return Finish(r, f, kClose, 0, "", false);
  r.flow[f].stopping = reason;
  Pump(r, f);
}

// Go's rule: empty the pipe into the drain before pulling more from the
// source, so EAGAIN on the drain means "drain full" and on the source "no
// data", never both.
void Worker::Pump(Relay& r, int f) {
  if (r.datagram) return PumpDatagrams(r, f);
  Flow& s = r.flow[f];
  for (int turn = 0; turn < kTurn; turn++) {
    if (s.in_flight > 0) {
      ssize_t n = splice(s.pipe.r, nullptr, r.Drain(f), nullptr, s.in_flight,
                         kSpliceFlags);
      if (n > 0) {
        s.in_flight -= n;
        s.moved += n;
        s.last_move = now_;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        // A drain that is not reading must not hold an unsplice up: what it
        // has not taken goes back to JS, which queues it on the drain.
        if (s.stopping != 0 && s.options.return_residual)
          return Finish(r, f, s.stopping, 0, "", false);
        return;  // EPOLLOUT will call us back
      }
      // A socket never accepts 0 bytes of a non-empty pipe; treat it as gone.
      int error = n < 0 ? errno : EPIPE;
      if (error == ECONNRESET || error == EPIPE)
        shared_.MarkReset(r.side[1 - f].id);
      return Finish(r, f, kError, error, "splice", true);
    }
    // Node's bytes go first, through the pipe as if read from the source.
    if (s.prefix_at < s.prefix.size()) {
      SysError err;
      if (!AcquirePipe(s, &err))
        return Finish(r, f, kError, err.error, err.syscall, false);
      ssize_t n = write(s.pipe.w, s.prefix.data() + s.prefix_at,
                        s.prefix.size() - s.prefix_at);
      if (n > 0) {
        s.prefix_at += n;
        s.in_flight = n;
        continue;
      }
      // The pipe is empty here: it takes at least a page.
      if (n < 0 && errno == EINTR) continue;
      return Finish(r, f, kError, n < 0 ? errno : EIO, "write", false);
    }
    if (s.stopping != 0) return Finish(r, f, s.stopping, 0, "", false);
    if (s.options.max > 0 && s.pulled >= s.options.max)
      return Finish(r, f, kMax, 0, "", false);
    SysError err;
    if (!AcquirePipe(s, &err))
      return Finish(r, f, kError, err.error, err.syscall, false);
    size_t want = s.pipe.capacity;
    if (s.options.max > 0)
      want = static_cast<size_t>(
          std::min<int64_t>(want, s.options.max - s.pulled));
    ssize_t n =
        splice(r.Source(f), nullptr, s.pipe.w, nullptr, want, kSpliceFlags);
    if (n > 0) {
      if (n == s.pipe.capacity) shared_.Grow(&s.pipe);
      s.in_flight = n;
      s.pulled += n;
      s.last_move = now_;
      continue;
    }
    if (n == 0) {
      if (shared_.WasReset(r.side[f].id))
        return Finish(r, f, kError, ECONNRESET, "splice", false);
      return Finish(r, f, kEof, 0, "", false);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      ReleasePipe(s);  // idle flows hold no pipe
      return;
    }
    return Finish(r, f, kError, errno, "splice", false);
  }
  // Turn spent with data still flowing: let the other flows have a turn.
  if (!s.queued) {
    s.queued = true;
    ready_.emplace_back(live_[&r], f);
  }
}

// UDP (datagram_pump.cc): what the drain does not take at once is held by
// the flow until EPOLLOUT; an unsplice waits for it, other ends drop it.
void Worker::PumpDatagrams(Relay& r, int f) {
  Flow& s = r.flow[f];
  PumpOutcome o = pump_.Pump(r.Source(f), r.Drain(f), s.options.max,
                             s.stopping != 0, s.queue, s.moved);
  if (o.received) s.last_move = now_;
  switch (o.kind) {
    case PumpOutcome::kWait:
      return;
    case PumpOutcome::kTurnOver:
      if (!s.queued) {
        s.queued = true;
        ready_.emplace_back(live_[&r], f);
      }
      return;
    case PumpOutcome::kStopped:
      return Finish(r, f, s.stopping, 0, "", false);
    case PumpOutcome::kMax:
      return Finish(r, f, kMax, 0, "", false);
    case PumpOutcome::kTooLarge:
      return Finish(r, f, kError, o.error, o.syscall, false);
    case PumpOutcome::kFailed:
      return FailDatagrams(r, o.error, o.syscall);
  }
}

// A socket error (an ICMP port unreachable on a connected socket is
// ECONNREFUSED) belongs to the relay, not to the flow that happens to read
// or write first: every flow still going ends with it.
void Worker::FailDatagrams(Relay& r, int error, const char* syscall) {
  for (int f = 0; f < 2; f++)
    if (!r.flow[f].ended) Finish(r, f, kError, error, syscall, true);
}

void Worker::DatagramEvent(Relay& r, int i, uint32_t events) {
  if (events & EPOLLERR) {
    int error = 0;
    socklen_t len = sizeof error;
    if (getsockopt(r.side[i].fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
      error = errno;
    // Already taken by a receive or send in this turn: nothing new.
    if (error != 0) return FailDatagrams(r, error, "recvmsg");
  }
  if (!r.flow[i].ended && (events & EPOLLIN)) Pump(r, i);
  Flow& into = r.flow[1 - i];
  if (!into.ended && !into.queue.held_sizes.empty() && (events & EPOLLOUT))
    Pump(r, 1 - i);
}

// The drain was reset (or closed) while its flow had nothing to write: with
// a quiet source no write would ever find out.
void Worker::DrainFailed(Relay& r, int f) {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(r.Drain(f), SOL_SOCKET, SO_ERROR, &error, &len) < 0)
    error = errno;
  // The flow reading from it may find only EOF now that the error is taken.
  shared_.MarkReset(r.side[1 - f].id);
  Finish(r, f, kError, error != 0 ? error : EPIPE, "splice", true);
}

void Worker::Finish(Relay& r, int f, Reason reason, int error,
                    const char* syscall, bool drain_failed) {
  Flow& s = r.flow[f];
  Result& result = s.result;
  result.flow = f;
  // Bytes still in the pipe, and Node's not yet in it, have left the source:
  // JavaScript queues them on the drain. After a drain error they have
  // nowhere to go.
  if (!drain_failed && s.options.return_residual) {
    result.residual.resize(s.in_flight);
    size_t got = 0;
    while (got < s.in_flight) {
      ssize_t n = read(s.pipe.r, result.residual.data() + got, s.in_flight - got);
      if (n > 0)
        got += n;
      else if (!(n < 0 && errno == EINTR))
        break;  // cannot happen for bytes already in the pipe
    }
    result.residual.resize(got);
    s.in_flight -= got;
    result.residual.insert(result.residual.end(),
                           s.prefix.begin() + s.prefix_at, s.prefix.end());
  }
  ReleasePipe(s);
  bool shut = false;
  if (reason == kEof && s.options.end) {
    // As Node's end() does, a drain already gone (ENOTCONN) is no error.
    shut = shutdown(r.Drain(f), SHUT_WR) == 0;
    if (!shut && errno != ENOTCONN) {
      reason = kError;
      error = errno;
      syscall = "shutdown";
    }
  }
  s.ended = true;
  // A blocking mode that cannot be restored is the end's error.
  SysError restore = r.Leave(f);
  if (restore.error != 0 && reason != kError) {
    reason = kError;
    error = restore.error;
    syscall = restore.syscall;
  }
  result.bytes = s.moved;
  result.datagrams = s.queue.datagrams;
  result.reason = reason;
  result.error = error;
  result.syscall = syscall;
  if (!r.Live()) return End(r);
  // An EOF whose drain the engine has shut needs nothing from JavaScript
  // while the other flow runs: both ends then reach it in one hand-over.
  if (shut) return;
  s.reported = true;
  result.last = false;
  r.on_end(std::move(result));
}

// Every flow has ended: the descriptors go, then JavaScript hears of the
// ends it has not yet, the last one marked so.
void Worker::End(Relay& r) {
  // The registrations belong to the open socket, which Node keeps open, so
  // they must be removed before our duplicates are closed. Removing one we
  // made cannot fail; were it left, epoll would report a freed relay.
  for (Side& side : r.side) {
    if (side.registered && epoll_ctl(epoll_, EPOLL_CTL_DEL, side.fd, nullptr) < 0)
      Fatal("sosplice: epoll_ctl");
    side.registered = false;
  }
  r.Release();
  r.ended = true;
  auto it = live_.find(&r);
  ended_.push_back(it->second);
  live_.erase(it);
  for (int f = 0; f < 2; f++) {
    Flow& flow = r.flow[f];
    if (!flow.options.on || flow.reported) continue;
    flow.reported = true;
    flow.result.last = f == 1 || !r.flow[1].options.on || r.flow[1].reported;
    r.on_end(std::move(flow.result));
  }
  r.on_end = nullptr;
}
bool Worker::AcquirePipe(Flow& flow, SysError* err) {
  if (flow.pipe.r >= 0) return true;
  if (pool_.empty()) return shared_.OpenPipe(&flow.pipe, err);
  flow.pipe = pool_.back();
  pool_.pop_back();
  pooled--;
  return true;
}

// The pool keeps empty pipes of the default size (a grown one shrinks back),
// while the engine's pipes are within their budget: pooled pipes count.
void Worker::ReleasePipe(Flow& flow) {
  Pipe* p = &flow.pipe;
  if (p->r < 0) return;
  bool keep = flow.in_flight == 0 && pool_.size() < kPoolMax;
  if (keep && p->capacity > shared_.default_pipe)
    keep = shared_.Resize(p, shared_.default_pipe);
  if (keep && p->capacity == shared_.default_pipe &&
      shared_.pipe_bytes <= shared_.budget) {
    p->grow = true;
    pool_.push_back(*p);
    pooled++;
    *p = Pipe{};
  } else {
    shared_.ClosePipe(p);
  }
  flow.in_flight = 0;
}

int Worker::IdleTimeout() {
  if (next_idle_check_ == INT64_MAX) return -1;
  return static_cast<int>(
      std::clamp<int64_t>(next_idle_check_ - NowMs(), 0, INT32_MAX));
}

// next_idle_check_ is a lower bound of every idle deadline: deadlines only
// move later as bytes move, so the live splices are scanned only when the
// earliest one may have passed.
void Worker::CheckIdle() {
  int64_t now = NowMs();
  if (now < next_idle_check_) return;
  next_idle_check_ = INT64_MAX;
  std::vector<std::pair<Relay*, int>> expired;
  for (auto& [ptr, r] : live_) {
    for (int f = 0; f < 2; f++) {
      Flow& flow = r->flow[f];
      // A lingering end without a way to hand bytes back waits for the drain.
      if (flow.ended || flow.options.idle_ms <= 0 ||
          (flow.stopping != 0 && !flow.options.return_residual))
        continue;
      int64_t deadline = flow.last_move + flow.options.idle_ms;
      if (deadline <= now)
        expired.emplace_back(ptr, f);
      else
        next_idle_check_ = std::min(next_idle_check_, deadline);
    }
  }
  // Ended relays stay in ended_ until the turn is over.
  for (auto [r, f] : expired) {
    if (r->flow[f].ended) continue;
    if (r->flow[f].options.return_residual)
      Finish(*r, f, kIdle, 0, "", false);
    else
      Request(*r, f, kIdle);
  }
}

namespace {

// Whether a reader of the socket would get bytes or an EOF now: a
// connection closed both ways keeps both for its reader. One that never
// connected, or was refused, has nothing or only an error to give. poll()
// and FIONREAD take nothing; a recv() would take a pending error.
bool HasBytesOrEof(int fd, bool* yes, SysError* err) {
  pollfd p{fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    *err = {errno, "poll"};
    return false;
  }
  *yes = (p.revents & POLLIN) != 0;
  if (!*yes || !(p.revents & POLLERR)) return true;
  int queued = 0;
  if (ioctl(fd, FIONREAD, &queued) < 0) {
    *err = {errno, "ioctl"};
    return false;
  }
  *yes = queued > 0;
  return true;
}

// The checks the BSD kernels make in sosplice(), with FreeBSD's codes. A
// datagram socket need be connected only to be a drain: a source receives
// from anyone.
bool CheckSocket(int fd, bool source, bool drain, SocketId* id, int* type,
                 int* protocol, SysError* err) {
  if (!IdentifySocket(fd, id, err)) return false;
  int listening = 0;
  socklen_t len = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
    *err = {errno, "getsockopt"};
    return false;
  }
  if (listening) {
    *err = {EINVAL, "splice"};
    return false;
  }
  len = sizeof *type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &len) < 0) {
    *err = {errno, "getsockopt"};
    return false;
  }
  len = sizeof *protocol;
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, protocol, &len) < 0) {
    *err = {errno, "getsockopt"};
    return false;
  }
  sockaddr_storage peer;
  len = sizeof peer;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0)
    return true;
  *err = {errno, "getpeername"};
  if (*type == SOCK_DGRAM) return !drain && err->error == ENOTCONN;
  // A connection closed both ways still has its unread bytes and its EOF
  // for a reader, which splice(2) gives; a socket never connected has none.
  bool readable = false;
  if (source && err->error == ENOTCONN && !HasBytesOrEof(fd, &readable, err))
    return false;
  return readable;
}

// Both sockets, each in the roles the spec gives it: two stream sockets, or
// two datagram sockets (*datagram), of one protocol.
bool CheckPair(const RelaySpec& spec, SocketId* id0, SocketId* id1,
               bool* datagram, SysError* err) {
  int type[2], proto[2];
  SocketId* id[2] = {id0, id1};
  for (int i = 0; i < 2; i++) {
    if (!CheckSocket(spec.fd[i], spec.flow[i].on, spec.flow[1 - i].on, id[i],
                     &type[i], &proto[i], err))
      return false;
  }
  *datagram = type[0] == SOCK_DGRAM;
  // Datagrams over UDP only: a run sent as one GSO send comes out as the
  // same datagrams there, and as one on a Unix socket.
  if (type[0] != type[1] || proto[0] != proto[1] ||
      (type[0] != SOCK_STREAM && !(*datagram && proto[0] == IPPROTO_UDP))) {
    *err = {EPROTONOSUPPORT, "splice"};
    return false;
  }
  return true;
}

}  // namespace

std::unique_ptr<Engine, void (*)(Engine*)> CreateEngine() {
  return {new Engine(), [](Engine* e) { delete e; }};
}

const char* BackendName() { return "pipe"; }

std::shared_ptr<Relay> Start(Engine& engine, RelaySpec spec,
                             EndCallback on_end, SysError* err) {
  auto r = std::make_shared<Relay>(engine.shared());
  for (int f = 0; f < 2; f++) {
    r->flow[f].options = spec.flow[f];
    r->flow[f].prefix = std::move(spec.prefix[f]);
  }
  // On failure the relay closes what it holds as it goes.
  r->datagram = spec.datagram;
  r->nodes = spec.checked;
  bool known = spec.checked
                   ? IdentifySocket(spec.fd[0], &r->side[0].id, err) &&
                         IdentifySocket(spec.fd[1], &r->side[1].id, err)
                   : CheckPair(spec, &r->side[0].id, &r->side[1].id,
                               &r->datagram, err);
  if (!known) return nullptr;
  // Datagrams held at an unsplice are sent before it ends, never handed back.
  if (r->datagram)
    for (Flow& flow : r->flow) flow.options.return_residual = false;
  if (r->side[0].id == r->side[1].id) {
    *err = {EINVAL, "splice"};
    return nullptr;
  }
  if (!DupBoth(spec.fd[0], spec.fd[1], &r->side[0].fd, &r->side[1].fd, err) ||
      !engine.Place(*r, err))
    return nullptr;
  r->on_end = std::move(on_end);
  return r;
}

void Run(const std::shared_ptr<Relay>& relay) {
  if (relay->running) return;
  relay->running = true;
  relay->worker->Post({relay, true, static_cast<Reason>(0)});
}

void Stop(const std::shared_ptr<Relay>& relay, Reason reason) {
  bool add = !relay->running;
  relay->running = true;
  relay->worker->Post({relay, add, reason});
}

int64_t Bytes(const Relay& relay, int flow) { return relay.flow[flow].moved; }

Stats GetStats(Engine& engine) { return engine.GetStats(); }

}  // namespace sosplice

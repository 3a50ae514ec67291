// The Linux `pipe` backend: splice(2) socket -> pipe -> socket, driven by
// worker threads with one epoll loop each. A splice is assigned to a worker
// when it starts and stays there (FreeBSD's design): the least loaded one,
// or the one already moving bytes through either of its sockets.
#include "posix.h"
#include "splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <map>
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

// A socket held by live splices, as source, drain or both.
struct Claim {
  bool source = false;
  bool drain = false;
  int worker = 0;  // where its splices run
  bool made_nonblocking = false;  // by the engine, to be undone at the end
  bool reset = false;  // a splice writing into it met ECONNRESET
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

class Splice;

// What the workers and the splices share, engine-wide: the sockets in use
// and the pipe budget. Every splice holds it, so it outlives the engine while
// a splice does (one that never ran, still held by JavaScript).
class Shared {
 public:
  // Sockets and loads, under the mutex.
  std::mutex mutex;
  std::map<SocketId, Claim> claims;
  std::vector<int> loads;  // live splices per worker

  // Records `fd`'s socket in one more role. The first splice to hold a
  // blocking socket makes it non-blocking: splice(2) would block the worker.
  bool Join(const SocketId& id, int fd, bool Claim::*role, int worker,
            SysError* err);
  // Undoes Join; the last splice to leave restores the blocking mode.
  bool Leave(const SocketId& id, int fd, bool Claim::*role, SysError* err);

  // A socket has one pending error, and the first call to meet it takes it:
  // when a splice writing into a reset socket takes the ECONNRESET, the
  // splice reading from it would see a plain EOF. The writer records the
  // reset here for the reader, which runs on the same worker (see Place), so
  // the record is always made before the reader looks. The writer may see
  // only EPIPE: a splice(2) that wrote some bytes before meeting the reset
  // returns their count, and the ECONNRESET it took is lost.
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

class Splice {
 public:
  explicit Splice(std::shared_ptr<Shared> shared) : shared(std::move(shared)) {}
  ~Splice() { Release(); }

  // Gives the sockets back, in their blocking mode, and closes every
  // descriptor the splice still holds. Run by whoever owns the splice: the
  // main thread until Run() or Stop(), then its worker. Reports a failure to
  // restore a blocking mode.
  SysError Release();

  const std::shared_ptr<Shared> shared;
  int source = -1;  // our duplicates: Node may close or reuse its own
  int drain = -1;
  SocketId source_id;
  SocketId drain_id;
  Options options;
  EndCallback on_end;
  Worker* worker = nullptr;
  int worker_index = -1;  // >= 0 while its sockets are claimed
  bool running = false;   // main thread: handed to the worker

  // Touched only by the worker thread.
  Pipe pipe;
  size_t in_pipe = 0;  // bytes in the pipe, not yet in the drain
  int64_t pulled = 0;  // bytes taken from the source
  int64_t last_move = 0;
  Reason stopping = static_cast<Reason>(0);  // pull no more, then end so
  bool registered = false;                   // in the worker's epoll set
  bool ended = false;
  bool queued = false;  // in the worker's ready list

  std::atomic<int64_t> moved{0};  // bytes written to the drain
};

namespace {

struct Command {
  std::shared_ptr<Splice> splice;
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
  void Add(const std::shared_ptr<Splice>& s);
  void Request(Splice& s, Reason reason);
  void Pump(Splice& s);
  void Finish(Splice& s, Reason reason, int error, const char* syscall,
              bool drain_failed);
  void Unregister(Splice& s, bool drain);
  bool AcquirePipe(Splice& s, SysError* err);
  void ReleasePipe(Splice& s);
  int IdleTimeout();
  void CheckIdle();

  Shared& shared_;
  int epoll_ = -1;
  int wake_ = -1;
  std::mutex mutex_;
  std::vector<Command> inbox_;
  bool quit_ = false;

  std::unordered_map<Splice*, std::shared_ptr<Splice>> live_;
  std::vector<std::shared_ptr<Splice>> ready_;
  std::vector<std::shared_ptr<Splice>> ended_;  // kept until the turn ends
  std::vector<Pipe> pool_;
  int64_t next_idle_check_ = INT64_MAX;
  int64_t now_ = 0;  // read once per turn: idle is timed in milliseconds
  std::thread thread_;
};

class Engine {
 public:
  // The workers release what they hold as they stop.
  ~Engine() { workers_.clear(); }

  const std::shared_ptr<Shared>& shared() const { return shared_; }

  // Claims the splice's sockets and picks its worker, starting the workers
  // at the first splice (again after a failed start).
  bool Place(Splice& s, SysError* err) {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    auto& claims = shared_->claims;
    auto source = claims.find(s.source_id);
    auto drain = claims.find(s.drain_id);
    // One source per drain and one drain per source, as the kernels enforce.
    if ((source != claims.end() && source->second.source) ||
        (drain != claims.end() && drain->second.drain)) {
      *err = {EBUSY, "splice"};
      return false;
    }
    if (workers_.empty() && !StartWorkers(err)) return false;
    // Both directions of a connection on one worker, for MarkReset.
    int worker = source != claims.end()  ? source->second.worker
                 : drain != claims.end() ? drain->second.worker
                                         : LeastLoaded();
    if (!shared_->Join(s.source_id, s.source, &Claim::source, worker, err))
      return false;
    if (!shared_->Join(s.drain_id, s.drain, &Claim::drain, worker, err)) {
      SysError ignored;  // reported: the error that stopped the start
      shared_->Leave(s.source_id, s.source, &Claim::source, &ignored);
      return false;
    }
    shared_->loads[worker]++;
    s.worker_index = worker;
    s.worker = workers_[worker].get();
    return true;
  }

  Stats GetStats() {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    Stats stats;
    stats.workers = static_cast<int>(workers_.size());
    for (size_t i = 0; i < workers_.size(); i++) {
      stats.splices += shared_->loads[i];
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
  // All workers or none: a failed start is tried again at the next splice.
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

bool Shared::Join(const SocketId& id, int fd, bool Claim::*role, int worker,
                  SysError* err) {
  auto [it, fresh] = claims.try_emplace(id);
  Claim& claim = it->second;
  if (fresh) {
    claim.worker = worker;
    int flags = fcntl(fd, F_GETFL);
    claim.made_nonblocking = flags >= 0 && !(flags & O_NONBLOCK);
    if (flags < 0 || (claim.made_nonblocking &&
                      fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)) {
      *err = {errno, "fcntl"};
      claims.erase(it);
      return false;
    }
  }
  claim.*role = true;
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

SysError Splice::Release() {
  SysError err;
  if (worker_index >= 0) {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->loads[worker_index]--;
    shared->Leave(source_id, source, &Claim::source, &err);
    shared->Leave(drain_id, drain, &Claim::drain, &err);
    worker_index = -1;
  }
  CloseFd(source);
  CloseFd(drain);
  source = drain = -1;
  shared->ClosePipe(&pipe);
  in_pipe = 0;
  return err;
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
    w->thread_ = std::thread([worker = w.get()] { worker->Run(); });
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
  // also for the splices still waiting in the inbox.
  for (Command& c : inbox_) c.splice->Release();
  for (auto& [ptr, s] : live_) s->Release();
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
      } else {
        Splice* s = static_cast<Splice*>(events[i].data.ptr);
        if (!s->ended) Pump(*s);
      }
    }
    std::vector<std::shared_ptr<Splice>> ready;
    ready.swap(ready_);
    for (auto& s : ready) {
      s->queued = false;
      if (!s->ended) Pump(*s);
    }
    CheckIdle();
    ended_.clear();
  }
}

void Worker::Handle(const Command& c) {
  Splice& s = *c.splice;
  if (c.add) {
    live_[&s] = c.splice;
    // Stopped before it ran: end without moving a byte.
    if (c.stop != 0) return Finish(s, c.stop, 0, "", false);
    return Add(c.splice);
  }
  if (!s.ended) Request(s, c.stop);
}

void Worker::Add(const std::shared_ptr<Splice>& s) {
  s->last_move = now_;
  if (s->options.idle_ms > 0)
    next_idle_check_ =
        std::min(next_idle_check_, s->last_move + s->options.idle_ms);
  // Edge-triggered: the loop below always runs each side to EAGAIN.
  epoll_event ev{};
  ev.data.ptr = s.get();
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, s->source, &ev) < 0)
    return Finish(*s, kError, errno, "epoll_ctl", false);
  s->registered = true;
  ev.events = EPOLLOUT | EPOLLET;
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, s->drain, &ev) < 0) {
    int error = errno;
    Unregister(*s, false);
    return Finish(*s, kError, error, "epoll_ctl", false);
  }
  Pump(*s);  // data may already be waiting in the source
}

// An unsplice lets what is in the pipe reach the drain first; a close ends
// at once, since one of the sockets is gone.
void Worker::Request(Splice& s, Reason reason) {
  if (reason == kClose) return Finish(s, kClose, 0, "", false);
  s.stopping = reason;
  Pump(s);
}

// Go's rule: empty the pipe into the drain before pulling more from the
// source, so EAGAIN on the drain means "drain full" and on the source "no
// data", never both.
void Worker::Pump(Splice& s) {
  for (int turn = 0; turn < kTurn; turn++) {
    if (s.in_pipe > 0) {
      ssize_t n = splice(s.pipe.r, nullptr, s.drain, nullptr, s.in_pipe,
                         kSpliceFlags);
      if (n > 0) {
        s.in_pipe -= n;
        s.moved += n;
        s.last_move = now_;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        // A drain that is not reading must not hold an unsplice up: what it
        // has not taken goes back to JS, which queues it on the drain.
        if (s.stopping != 0 && s.options.return_residual)
          return Finish(s, s.stopping, 0, "", false);
        return;  // EPOLLOUT will call us back
      }
      // A socket never accepts 0 bytes of a non-empty pipe; treat it as gone.
      int error = n < 0 ? errno : EPIPE;
      if (error == ECONNRESET || error == EPIPE) shared_.MarkReset(s.drain_id);
      return Finish(s, kError, error, "splice", true);
    }
    if (s.stopping != 0) return Finish(s, s.stopping, 0, "", false);
    if (s.options.max > 0 && s.pulled >= s.options.max)
      return Finish(s, kMax, 0, "", false);
    SysError err;
    if (!AcquirePipe(s, &err))
      return Finish(s, kError, err.error, err.syscall, false);
    size_t want = s.pipe.capacity;
    if (s.options.max > 0)
      want = static_cast<size_t>(
          std::min<int64_t>(want, s.options.max - s.pulled));
    ssize_t n =
        splice(s.source, nullptr, s.pipe.w, nullptr, want, kSpliceFlags);
    if (n > 0) {
      if (n == s.pipe.capacity) shared_.Grow(&s.pipe);
      s.in_pipe = n;
      s.pulled += n;
      s.last_move = now_;
      continue;
    }
    if (n == 0) {
      if (shared_.WasReset(s.source_id))
        return Finish(s, kError, ECONNRESET, "splice", false);
      return Finish(s, kEof, 0, "", false);
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      ReleasePipe(s);  // idle splices hold no pipe
      return;
    }
    return Finish(s, kError, errno, "splice", false);
  }
  // Turn spent with data still flowing: let the other splices have a turn.
  if (!s.queued) {
    s.queued = true;
    ready_.push_back(live_[&s]);
  }
}

void Worker::Finish(Splice& s, Reason reason, int error, const char* syscall,
                    bool drain_failed) {
  Result result;
  // Bytes still in the pipe have left the source: JavaScript queues them on
  // the drain. After a drain error they have nowhere to go.
  if (!drain_failed && s.options.return_residual) {
    result.residual.resize(s.in_pipe);
    size_t got = 0;
    while (got < s.in_pipe) {
      ssize_t n = read(s.pipe.r, result.residual.data() + got, s.in_pipe - got);
      if (n > 0)
        got += n;
      else if (!(n < 0 && errno == EINTR))
        break;  // cannot happen for bytes already in the pipe
    }
    result.residual.resize(got);
    s.in_pipe -= got;
  }
  if (s.registered) Unregister(s, true);
  ReleasePipe(s);
  // A blocking mode that cannot be restored is the end's error.
  SysError restore = s.Release();
  if (restore.error != 0 && reason != kError) {
    reason = kError;
    error = restore.error;
    syscall = restore.syscall;
  }

  s.ended = true;
  auto it = live_.find(&s);
  ended_.push_back(it->second);
  live_.erase(it);

  result.bytes = s.moved;
  result.reason = reason;
  result.error = error;
  result.syscall = syscall;
  s.on_end(std::move(result));
  s.on_end = nullptr;
}

// The registrations belong to the open socket, which Node keeps open, so
// they must be removed before our duplicates are closed. Removing one we
// made cannot fail; were it left, epoll would report a freed splice.
void Worker::Unregister(Splice& s, bool drain) {
  if (epoll_ctl(epoll_, EPOLL_CTL_DEL, s.source, nullptr) < 0 ||
      (drain && epoll_ctl(epoll_, EPOLL_CTL_DEL, s.drain, nullptr) < 0))
    Fatal("sosplice: epoll_ctl");
  s.registered = false;
}

bool Worker::AcquirePipe(Splice& s, SysError* err) {
  if (s.pipe.r >= 0) return true;
  if (pool_.empty()) return shared_.OpenPipe(&s.pipe, err);
  s.pipe = pool_.back();
  pool_.pop_back();
  pooled--;
  return true;
}

// The pool keeps empty pipes of the default size (a grown one shrinks back),
// while the engine's pipes are within their budget: pooled pipes count.
void Worker::ReleasePipe(Splice& s) {
  Pipe* p = &s.pipe;
  if (p->r < 0) return;
  bool keep = s.in_pipe == 0 && pool_.size() < kPoolMax;
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
  s.in_pipe = 0;
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
  std::vector<Splice*> expired;
  for (auto& [ptr, s] : live_) {
    // A lingering end without a way to hand bytes back waits for the drain.
    if (s->options.idle_ms <= 0 ||
        (s->stopping != 0 && !s->options.return_residual))
      continue;
    int64_t deadline = s->last_move + s->options.idle_ms;
    if (deadline <= now)
      expired.push_back(ptr);
    else
      next_idle_check_ = std::min(next_idle_check_, deadline);
  }
  for (Splice* s : expired) {
    if (s->options.return_residual)
      Finish(*s, kIdle, 0, "", false);
    else
      Request(*s, kIdle);
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

// The checks the BSD kernels make in sosplice(), with FreeBSD's codes.
bool CheckSocket(int fd, bool source, SocketId* id, int* type, int* protocol,
                 SysError* err) {
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
  // A connection closed both ways still has its unread bytes and its EOF
  // for a reader, which splice(2) gives; a socket never connected has none.
  bool readable = false;
  if (source && err->error == ENOTCONN && !HasBytesOrEof(fd, &readable, err))
    return false;
  return readable;
}

bool CheckPair(int source, int drain, SocketId* source_id, SocketId* drain_id,
               SysError* err) {
  int source_type, drain_type, source_proto, drain_proto;
  if (!CheckSocket(source, true, source_id, &source_type, &source_proto,
                   err) ||
      !CheckSocket(drain, false, drain_id, &drain_type, &drain_proto, err))
    return false;
  if (*source_id == *drain_id) {
    *err = {EINVAL, "splice"};
    return false;
  }
  // splice(2) reads only from stream sockets; both ends speak the same one.
  if (source_type != SOCK_STREAM || drain_type != SOCK_STREAM ||
      source_proto != drain_proto) {
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

std::shared_ptr<Splice> Start(Engine& engine, int source, int drain,
                              const Options& options, EndCallback on_end,
                              SysError* err) {
  auto s = std::make_shared<Splice>(engine.shared());
  // On failure the splice closes what it holds as it goes.
  if (!CheckPair(source, drain, &s->source_id, &s->drain_id, err) ||
      !DupBoth(source, drain, &s->source, &s->drain, err) ||
      !engine.Place(*s, err))
    return nullptr;
  s->options = options;
  s->on_end = std::move(on_end);
  return s;
}

void Run(const std::shared_ptr<Splice>& splice) {
  if (splice->running) return;
  splice->running = true;
  splice->worker->Post({splice, true, static_cast<Reason>(0)});
}

void Stop(const std::shared_ptr<Splice>& splice, Reason reason) {
  bool add = !splice->running;
  splice->running = true;
  splice->worker->Post({splice, add, reason});
}

int64_t Bytes(const Splice& splice) { return splice.moved; }

Stats GetStats(Engine& engine) { return engine.GetStats(); }

}  // namespace sosplice

// The Linux `pipe` backend: splice(2) socket -> pipe -> socket, driven by
// worker threads with one epoll loop each. A splice is assigned to the least
// loaded worker when it starts and stays there (FreeBSD's design).
#include "posix.h"
#include "splice.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

namespace sosplice {
namespace {

constexpr int kPipeSize = 256 * 1024;  // asked for; the kernel may refuse
constexpr size_t kPoolMax = 64;        // idle pipes kept per worker
constexpr int kBudget = 32;            // splice calls before yielding a turn
constexpr unsigned kSpliceFlags = SPLICE_F_MOVE | SPLICE_F_NONBLOCK;

struct Pipe {
  int r = -1;
  int w = -1;
  size_t capacity = 0;
};

}  // namespace

class Engine;
class Worker;

class Splice {
 public:
  int source = -1;  // our duplicates: Node may close or reuse its own
  int drain = -1;
  SocketId source_id;
  SocketId drain_id;
  Options options;
  EndCallback on_end;
  Worker* worker = nullptr;
  bool running = false;  // main thread: handed to the worker

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
  explicit Worker(Engine& engine);
  ~Worker();
  void Post(Command command);

  std::atomic<int> load{0};
  std::atomic<int> pooled{0};

 private:
  void Run();
  void Drain();
  void Handle(const Command& c);
  void Add(const std::shared_ptr<Splice>& s);
  void Request(Splice& s, Reason reason);
  void Pump(Splice& s);
  void Finish(Splice& s, Reason reason, int error, const char* syscall,
              bool drain_failed);
  bool AcquirePipe(Splice& s);
  void ReleasePipe(Splice& s);
  int IdleTimeout();
  void CheckIdle();

  Engine& engine_;
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
  // The workers use the claim maps until they are joined: stop them first.
  ~Engine() { workers_.clear(); }

  Worker& LeastLoaded() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (workers_.empty()) {
      unsigned n = std::max(1u, std::thread::hardware_concurrency());
      for (unsigned i = 0; i < n; i++)
        workers_.push_back(std::make_unique<Worker>(*this));
    }
    Worker* best = workers_[0].get();
    for (auto& w : workers_)
      if (w->load < best->load) best = w.get();
    return *best;
  }

  // One source per drain and one drain per source, as the kernels enforce.
  bool Claim(const SocketId& source, const SocketId& drain) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sources_.count(source) || drains_.count(drain)) return false;
    sources_[source] = 1;
    drains_[drain] = 1;
    return true;
  }

  void Unclaim(const SocketId& source, const SocketId& drain) {
    std::lock_guard<std::mutex> lock(mutex_);
    sources_.erase(source);
    drains_.erase(drain);
    for (const SocketId& id : {source, drain})
      if (!sources_.count(id) && !drains_.count(id)) reset_.erase(id);
  }

  // A socket has one pending error, and the first call to meet it takes it:
  // when a splice writing into a reset socket takes the ECONNRESET, the
  // splice reading from it would see a plain EOF. The writer records the
  // reset here for the reader.
  void MarkReset(const SocketId& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (sources_.count(id)) reset_.insert(id);
  }

  bool WasReset(const SocketId& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    return reset_.count(id) > 0;
  }

  Stats GetStats() {
    std::lock_guard<std::mutex> lock(mutex_);
    Stats stats;
    stats.workers = static_cast<int>(workers_.size());
    for (auto& w : workers_) {
      stats.splices += w->load;
      stats.pooled_pipes += w->pooled;
    }
    // An epoll and an eventfd per worker, two per pooled pipe.
    stats.descriptors = 2 * stats.workers + 2 * stats.pooled_pipes;
    return stats;
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::map<SocketId, int> sources_;
  std::map<SocketId, int> drains_;
  std::set<SocketId> reset_;
};

Worker::Worker(Engine& engine) : engine_(engine) {
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) Fatal("sosplice: epoll_create1");
  wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_ < 0) Fatal("sosplice: eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up descriptor
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &ev) < 0)
    Fatal("sosplice: epoll_ctl");
  thread_ = std::thread([this] { Run(); });
}

Worker::~Worker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    quit_ = true;
  }
  uint64_t one = 1;
  if (write(wake_, &one, sizeof one) < 0 && errno != EAGAIN)
    Fatal("sosplice: eventfd write");
  thread_.join();
  // The environment is going away: close what is left without reporting.
  for (auto& [ptr, s] : live_) {
    CloseFd(s->source);
    CloseFd(s->drain);
    CloseFd(s->pipe.r);
    CloseFd(s->pipe.w);
  }
  for (Pipe& p : pool_) {
    CloseFd(p.r);
    CloseFd(p.w);
  }
  CloseFd(wake_);
  CloseFd(epoll_);
}

void Worker::Post(Command command) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    inbox_.push_back(std::move(command));
  }
  uint64_t one = 1;
  // EAGAIN only if the counter is full, and then a wake-up is pending anyway.
  if (write(wake_, &one, sizeof one) < 0 && errno != EAGAIN)
    Fatal("sosplice: eventfd write");
}

void Worker::Run() {
  epoll_event events[128];
  for (;;) {
    int n = epoll_wait(epoll_, events, 128, ready_.empty() ? IdleTimeout() : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fatal("sosplice: epoll_wait");
    }
    now_ = NowMs();
    for (int i = 0; i < n; i++) {
      if (events[i].data.ptr == nullptr) {
        uint64_t count;
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
  ev.events = EPOLLOUT | EPOLLET;
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, s->drain, &ev) < 0) {
    int error = errno;
    epoll_ctl(epoll_, EPOLL_CTL_DEL, s->source, nullptr);
    return Finish(*s, kError, error, "epoll_ctl", false);
  }
  s->registered = true;
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
  for (int turn = 0; turn < kBudget; turn++) {
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
      if (error == ECONNRESET) engine_.MarkReset(s.drain_id);
      return Finish(s, kError, error, "splice", true);
    }
    if (s.stopping != 0) return Finish(s, s.stopping, 0, "", false);
    if (s.options.max > 0 && s.pulled >= s.options.max)
      return Finish(s, kMax, 0, "", false);
    if (!AcquirePipe(s)) return Finish(s, kError, errno, "pipe2", false);
    size_t want = s.pipe.capacity;
    if (s.options.max > 0)
      want = static_cast<size_t>(
          std::min<int64_t>(want, s.options.max - s.pulled));
    ssize_t n =
        splice(s.source, nullptr, s.pipe.w, nullptr, want, kSpliceFlags);
    if (n > 0) {
      s.in_pipe = n;
      s.pulled += n;
      s.last_move = now_;
      continue;
    }
    if (n == 0) {
      if (engine_.WasReset(s.source_id))
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
  // Budget spent with data still flowing: let the other splices have a turn.
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
  // The registrations belong to the open socket, which Node keeps open, so
  // they must be removed before our duplicates are closed.
  if (s.registered) {
    if (epoll_ctl(epoll_, EPOLL_CTL_DEL, s.source, nullptr) < 0 ||
        epoll_ctl(epoll_, EPOLL_CTL_DEL, s.drain, nullptr) < 0)
      Fatal("sosplice: epoll_ctl");
  }
  CloseFd(s.source);
  CloseFd(s.drain);
  s.source = s.drain = -1;
  ReleasePipe(s);

  s.ended = true;
  auto it = live_.find(&s);
  ended_.push_back(it->second);
  live_.erase(it);
  load--;

  result.bytes = s.moved;
  result.reason = reason;
  result.error = error;
  result.syscall = syscall;
  s.on_end(std::move(result));
  s.on_end = nullptr;
}

bool Worker::AcquirePipe(Splice& s) {
  if (s.pipe.r >= 0) return true;
  if (!pool_.empty()) {
    s.pipe = pool_.back();
    pool_.pop_back();
    pooled--;
    return true;
  }
  int fds[2];
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return false;
  s.pipe.r = fds[0];
  s.pipe.w = fds[1];
  // A larger pipe moves more per call; it is only a hint, so a refusal
  // (the per-user pipe memory limit) keeps the default size.
  int size = fcntl(fds[1], F_SETPIPE_SZ, kPipeSize);
  if (size < 0) size = fcntl(fds[1], F_GETPIPE_SZ);
  s.pipe.capacity = size > 0 ? size : 65536;
  return true;
}

void Worker::ReleasePipe(Splice& s) {
  if (s.pipe.r < 0) return;
  if (s.in_pipe == 0 && pool_.size() < kPoolMax) {
    pool_.push_back(s.pipe);
    pooled++;
  } else {
    CloseFd(s.pipe.r);
    CloseFd(s.pipe.w);
  }
  s.pipe = Pipe{};
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

// Whether a reader of the socket would get bytes, an EOF or an error now.
// poll() takes none of them; a recv() would take a pending error.
bool Readable(int fd, bool* readable, SysError* err) {
  pollfd p{fd, POLLIN, 0};
  int n;
  do n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    *err = {errno, "poll"};
    return false;
  }
  *readable = (p.revents & POLLIN) != 0;
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
  if (source && err->error == ENOTCONN && !Readable(fd, &readable, err))
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
  SocketId source_id, drain_id;
  if (!CheckPair(source, drain, &source_id, &drain_id, err)) return nullptr;
  if (!engine.Claim(source_id, drain_id)) {
    *err = {EBUSY, "splice"};
    return nullptr;
  }
  auto s = std::make_shared<Splice>();
  s->source_id = source_id;
  s->drain_id = drain_id;
  if (!DupBoth(source, drain, &s->source, &s->drain, err)) {
    engine.Unclaim(source_id, drain_id);
    return nullptr;
  }
  s->options = options;
  s->on_end = [&engine, source_id, drain_id,
               on_end = std::move(on_end)](Result&& r) {
    engine.Unclaim(source_id, drain_id);
    on_end(std::move(r));
  };
  Worker& worker = engine.LeastLoaded();
  s->worker = &worker;
  worker.load++;
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

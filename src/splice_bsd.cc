// The `so_splice` backend for OpenBSD and FreeBSD: the kernel moves the
// bytes (setsockopt SO_SPLICE); this file sets the option, reads the count
// and notices the end. Written from setsockopt(2) on OpenBSD and
// getsockopt(2) on FreeBSD; compiled only where SO_SPLICE exists.
#include "posix.h"
#include "splice.h"

#include <fcntl.h>
#include <sys/event.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace sosplice {
namespace {

// FreeBSD's sp_idle is a lifetime limit and it records no end reason, so
// idle and max are watched from the byte count at this period.
constexpr int kTickMs = 50;

}  // namespace

class Relay;

// One flow of a relay: one SO_SPLICE, on its own duplicates of the sockets.
class Splice {
 public:
  int source = -1;  // our duplicates: Node may close or reuse its own
  int drain = -1;
  int index = 0;    // the flow it is in its relay
  Options options;
  std::shared_ptr<Relay> relay;  // until it has ended: its ends go there
  Engine* engine = nullptr;
  bool running = false;  // main thread
  // Worker thread only.
  bool ended = false;
  int64_t last_move = 0;
  // The kernel's count as last read by the worker, which alone touches the
  // descriptors.
  std::atomic<int64_t> bytes{0};
};

class Engine {
 public:
  Engine();
  ~Engine();
  void Post(const std::shared_ptr<Splice>& s, Reason stop);
  std::atomic<int> live{0};

 private:
  void Loop();
  void Check(Splice& s, bool readable);
  void Finish(Splice& s, Reason reason, int error);

  int kq_ = -1;
  int wake_[2] = {-1, -1};
  std::mutex mutex_;
  std::vector<std::pair<std::shared_ptr<Splice>, Reason>> inbox_;
  bool quit_ = false;
  std::unordered_map<Splice*, std::shared_ptr<Splice>> splices_;
  std::vector<std::shared_ptr<Splice>> ended_;  // kept until the turn ends
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

int64_t SpliceCount(int fd, int* error) {
  off_t n = 0;
  socklen_t len = sizeof n;
  if (getsockopt(fd, SOL_SOCKET, SO_SPLICE, &n, &len) < 0) {
    *error = errno;
    return -1;
  }
  return n;
}

int SetSplice(int source, int drain, const Options& options) {
  struct splice sp = {};
  sp.sp_fd = drain;
  sp.sp_max = drain < 0 ? 0 : options.max;
#ifdef __OpenBSD__
  // OpenBSD's sp_idle is inactivity, as promised to JavaScript.
  sp.sp_idle.tv_sec = options.idle_ms / 1000;
  sp.sp_idle.tv_usec = (options.idle_ms % 1000) * 1000;
#endif
  return setsockopt(source, SOL_SOCKET, SO_SPLICE, &sp, sizeof sp) < 0 ? errno
                                                                        : 0;
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
  thread_ = std::thread([this] { Loop(); });
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
    timespec tick = {0, kTickMs * 1000000L};
    int n = kevent(kq_, nullptr, 0, events, 64, splices_.empty() ? nullptr : &tick);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fatal("sosplice: kevent");
    }
    for (int i = 0; i < n; i++) {
      if (events[i].udata != nullptr) {
        Check(*static_cast<Splice*>(events[i].udata), true);
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
          // The kernel reports ENOTCONN/EPROTO when it had already ended.
          if (splices_.count(s.get())) SetSplice(s->source, -1, s->options);
          Finish(*s, stop, 0);
          continue;
        }
        splices_[s.get()] = s;
        s->last_move = NowMs();
        if (int error = SetSplice(s->source, s->drain, s->options)) {
          Finish(*s, kError, error);
          continue;
        }
        // While spliced the source never turns readable: when it does, the
        // splice has ended (data, EOF or an error are waiting).
        struct kevent ev;
        EV_SET(&ev, s->source, EVFILT_READ, EV_ADD, 0, 0, s.get());
        if (kevent(kq_, &ev, 1, nullptr, 0, nullptr) < 0)
          Finish(*s, kError, errno);
      }
    }
    std::vector<Splice*> all;
    for (auto& [ptr, s] : splices_) all.push_back(ptr);
    for (Splice* s : all) Check(*s, false);
    ended_.clear();
  }
}

void Engine::Check(Splice& s, bool readable) {
  if (s.ended) return;
  int error = 0;
  int64_t bytes = SpliceCount(s.source, &error);
  if (bytes < 0) return Finish(s, kError, error);
  int64_t now = NowMs();
  if (bytes != s.bytes) {
    s.bytes = bytes;
    s.last_move = now;
  }
  if (s.options.max > 0 && bytes >= s.options.max) return Finish(s, kMax, 0);
  if (!readable) {
    if (s.options.idle_ms > 0 && now - s.last_move >= s.options.idle_ms) {
      SetSplice(s.source, -1, s.options);
      return Finish(s, kIdle, 0);
    }
    return;
  }
  // Read the end reason now: left in SO_ERROR, Node's next read would take
  // it for a socket error and destroy a healthy socket.
  int so_error = 0;
  socklen_t len = sizeof so_error;
  if (getsockopt(s.source, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
    return Finish(s, kError, errno);
  if (so_error == EFBIG) return Finish(s, kMax, 0);
  if (so_error == ETIMEDOUT) return Finish(s, kIdle, 0);
  if (so_error != 0) return Finish(s, kError, so_error);
  char byte;
  ssize_t peeked = recv(s.source, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (peeked == 0) return Finish(s, kEof, 0);
  if (peeked < 0 && errno != EAGAIN && errno != EINTR)
    return Finish(s, kError, errno);
  // Data waiting and no reason given: unspliced by someone else.
  Finish(s, kUnsplice, 0);
}

void Engine::Finish(Splice& s, Reason reason, int error) {
  int count_error = 0;
  int64_t bytes = SpliceCount(s.source, &count_error);
  if (bytes >= 0) s.bytes = bytes;
  s.ended = true;
  // Closing our duplicate drops its kqueue registration with it.
  CloseFd(s.source);
  CloseFd(s.drain);
  s.source = s.drain = -1;
  auto it = splices_.find(&s);
  if (it != splices_.end()) {
    ended_.push_back(it->second);
    splices_.erase(it);
  }
  live--;
  Result result;
  result.flow = s.index;
  result.bytes = s.bytes;
  result.reason = reason;
  result.error = error;
  result.syscall = "setsockopt";
  // The relay and its splices hold each other until every flow has ended.
  std::shared_ptr<Relay> relay = std::move(s.relay);
  bool last = --relay->live == 0;
  result.last = last;
  relay->on_end(std::move(result));
  if (last) {
    relay->on_end = nullptr;
    for (auto& f : relay->flow) f.reset();
  }
}

std::unique_ptr<Engine, void (*)(Engine*)> CreateEngine() {
  return {new Engine(), [](Engine* e) { delete e; }};
}

const char* BackendName() { return "so_splice"; }

std::shared_ptr<Relay> Start(Engine& engine, const RelaySpec& spec,
                             EndCallback on_end, SysError* err) {
  for (int fd : spec.fd) {
    struct stat st;
    if (fstat(fd, &st) < 0) {
      *err = {errno, "fstat"};
      return nullptr;
    }
    if (!S_ISSOCK(st.st_mode)) {
      *err = {ENOTSOCK, "setsockopt"};
      return nullptr;
    }
  }
  auto relay = std::make_shared<Relay>();
  for (int f = 0; f < 2; f++) {
    if (!spec.flow[f].on) continue;
    auto s = std::make_shared<Splice>();
    if (!DupBoth(spec.fd[f], spec.fd[1 - f], &s->source, &s->drain, err)) {
      for (auto& done : relay->flow) {
        if (!done) continue;
        CloseFd(done->source);
        CloseFd(done->drain);
        engine.live--;
      }
      return nullptr;
    }
    s->index = f;
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

// Live to within one tick.
int64_t Bytes(const Relay& relay, int flow) {
  return relay.flow[flow] ? relay.flow[flow]->bytes.load() : 0;
}

Stats GetStats(Engine& engine) {
  Stats stats;
  stats.workers = 1;
  stats.relays = engine.live;  // here: live flows
  stats.descriptors = 3;  // the kqueue and the wake-up pipe
  return stats;
}

}  // namespace sosplice

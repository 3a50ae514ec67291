// The interface every platform engine implements. Plain C++: no N-API here,
// so the engines stay syscall code and the entry file does the marshalling.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace sosplice {

// Why a splice ended. The numbers are shared with lib/native.ts.
enum Reason : int {
  kEof = 1,       // the source reached end of file
  kMax = 2,       // `max` bytes were moved
  kIdle = 3,      // nothing moved for `idle` milliseconds
  kUnsplice = 4,  // asked for from JavaScript
  kError = 5,     // a socket error, in Result::error
  kClose = 6,     // one of the sockets was closed from JavaScript
};

struct Options {
  int64_t max = 0;      // 0: no limit
  int64_t idle_ms = 0;  // 0: no idle timeout
  // Whether bytes still in flight when the splice ends (idle, close, or an
  // unsplice the drain does not take at once) come back in
  // Result::residual. Without it they are first delivered to the drain.
  bool return_residual = true;
};

struct Result {
  int64_t bytes = 0;           // bytes written to the drain by the engine
  Reason reason = kEof;
  int error = 0;               // errno, for kError
  const char* syscall = "";    // the call that failed, for kError
  std::vector<char> residual;  // left the source but not yet in the drain
};

// A failed call: errno and the syscall's name.
struct SysError {
  int error = 0;
  const char* syscall = "";
};

// Called once, on an engine thread, when a splice has ended and every
// descriptor the engine held for it is closed. It is destroyed without being
// called when the splice never ran, or when the engine is destroyed first.
using EndCallback = std::function<void(Result&&)>;

class Splice;
class Engine;

struct Stats {
  int workers = 0;
  int splices = 0;       // live splices
  int pooled_pipes = 0;  // idle pipes kept for reuse (two descriptors each)
  int descriptors = 0;   // held by the engine itself, whatever the splices
  // Linux: the pipes held, in use or pooled, and their sizes.
  int pipes = 0;
  int64_t pipe_bytes = 0;         // their capacity
  int64_t pipe_budget = 0;        // the capacity the engine keeps within
  int pipe_resizes_refused = 0;   // F_SETPIPE_SZ calls the kernel refused
  int pipes_undersized = 0;       // new pipes left smaller than wanted
};

std::unique_ptr<Engine, void (*)(Engine*)> CreateEngine();
const char* BackendName();

// Validates both descriptors and duplicates them; moves nothing until Run().
// On failure returns null and fills *err; nothing is left open.
std::shared_ptr<Splice> Start(Engine& engine, int source, int drain,
                              const Options& options, EndCallback on_end,
                              SysError* err);
void Run(const std::shared_ptr<Splice>& splice);
// Asks the splice to end with kUnsplice (after what is in flight has reached
// the drain, or with it as residual) or kClose (at once); a no-op once it
// has ended. Main thread.
void Stop(const std::shared_ptr<Splice>& splice, Reason reason);
int64_t Bytes(const Splice& splice);
Stats GetStats(Engine& engine);

}  // namespace sosplice

// The interface every platform engine implements. Plain C++: no N-API here,
// so the engines stay syscall code and the entry file does the marshalling.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace sosplice {

// Why a flow ended. The numbers are shared with lib/native.ts.
enum Reason : int {
  kEof = 1,       // the source reached end of file
  kMax = 2,       // `max` bytes were moved
  kIdle = 3,      // nothing moved for `idle` milliseconds
  kUnsplice = 4,  // asked for from JavaScript
  kError = 5,     // a socket error, in Result::error
  kClose = 6,     // one of the sockets was closed from JavaScript
};

// One direction of a relay: flow 0 moves socket 0 into socket 1, flow 1
// socket 1 into socket 0.
struct Options {
  bool on = false;
  int64_t max = 0;      // 0: no limit
  int64_t idle_ms = 0;  // 0: no idle timeout
  // After the source's EOF, shut the drain's write side (where the engine
  // can: Linux). JavaScript ends the drain in Node either way.
  bool end = false;
  // Whether bytes still in flight when the flow ends (idle, close, or an
  // unsplice the drain does not take at once) come back in
  // Result::residual. Without it they are first delivered to the drain.
  bool return_residual = true;
};

// Two sockets and the flows between them: one flow for a splice, two for a
// proxied connection, which then costs one registration, not two.
struct RelaySpec {
  int fd[2] = {-1, -1};
  Options flow[2];
  // The caller knows both are connected stream sockets of one kind (Node's
  // TCP or Unix sockets), or with `datagram` UDP sockets whose drains are
  // connected (Node's dgram): only their identity is looked up.
  bool checked = false;
  // Datagram sockets (known from SO_TYPE when not `checked`): boundaries
  // kept, `max` never splits one, no EOF, no residual.
  bool datagram = false;
  // Bytes for each flow's drain ahead of its source's: what Node had
  // already read from the source. Counted in Result::bytes, not in `max`
  // (which counts the source's). The Linux engine only; so_splice refuses.
  std::vector<char> prefix[2];
};

struct Result {
  int flow = 0;
  bool last = true;            // no flow of the relay is left after this one
  int64_t bytes = 0;           // bytes written to the drain by the engine
  int64_t datagrams = 0;       // datagrams among them (datagram relays);
                               // -1: the kernel counts bytes only (OpenBSD)
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

// Called once per flow, on an engine thread, when it has ended; with `last`
// set, every descriptor the engine held for the relay is closed. It is
// destroyed without being called when the relay never ran, or when the
// engine is destroyed first.
using EndCallback = std::function<void(Result&&)>;

class Relay;
class Engine;

struct Stats {
  int workers = 0;
  int relays = 0;        // live relays
  int pooled_pipes = 0;  // idle pipes kept for reuse (two descriptors each)
  int descriptors = 0;   // held by the engine itself, whatever the relays
  // Linux: the pipes held, in use or pooled, and their sizes.
  int pipes = 0;
  int64_t pipe_bytes = 0;         // their capacity
  int64_t pipe_budget = 0;        // the capacity the engine keeps within
  int pipe_resizes_refused = 0;   // F_SETPIPE_SZ calls the kernel refused
  int pipes_undersized = 0;       // new pipes left smaller than wanted
};

std::unique_ptr<Engine, void (*)(Engine*)> CreateEngine();
const char* BackendName();

// Validates the descriptors and duplicates them (one duplicate per socket);
// moves nothing until Run(). On failure returns null and fills *err; nothing
// is left open.
std::shared_ptr<Relay> Start(Engine& engine, RelaySpec spec,
                             EndCallback on_end, SysError* err);
void Run(const std::shared_ptr<Relay>& relay);
// Asks every flow still going to end with kUnsplice (after what is in flight
// has reached the drain, or with it as residual) or kClose (at once); a
// no-op once the relay has ended. Main thread.
void Stop(const std::shared_ptr<Relay>& relay, Reason reason);
int64_t Bytes(const Relay& relay, int flow);
Stats GetStats(Engine& engine);

}  // namespace sosplice

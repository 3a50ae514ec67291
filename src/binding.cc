// The addon's entry: turns JavaScript values into engine calls and engine
// results back into JavaScript values. Policy lives in lib/.
#include <napi.h>

#include <climits>
#include <cmath>
#include <mutex>
#include <string>

#include "errno_error.h"
#include "posix.h"
#include "splice.h"

namespace sosplice {
namespace {

struct Addon {
  std::unique_ptr<Engine, void (*)(Engine*)> engine = CreateEngine();
};

struct Handle;
using HandleRef = std::shared_ptr<Handle>;

// An ended splice on its way from an engine thread to the main thread.
struct Delivery {
  std::weak_ptr<Handle> handle;  // JavaScript may have dropped it meanwhile
  Result result;
};

void DeliverEnd(Napi::Env env, Napi::Function on_end, std::nullptr_t*,
                Delivery* delivery);

// Typed, so that DeliverEnd is also called for the deliveries still queued
// when the environment is torn down (with no env), and can free them.
using EndFunction =
    Napi::TypedThreadSafeFunction<std::nullptr_t, Delivery, DeliverEnd>;

// What a JavaScript handle refers to.
struct Handle {
  std::shared_ptr<Splice> splice;
  EndFunction tsfn;
  bool live = true;  // main thread only: false once the end was delivered
};

HandleRef& Unwrap(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "expected a splice handle");
  return *info[0].As<Napi::External<HandleRef>>().Data();
}

int64_t NonNegative(const Napi::Value& v, const char* name) {
  if (!v.IsNumber())
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a number");
  int64_t n = v.As<Napi::Number>().Int64Value();
  if (n < 0)
    throw Napi::RangeError::New(v.Env(), std::string(name) + " must be >= 0");
  return n;
}

// A descriptor number. One that no descriptor can have is EBADF, as the
// kernel would say: a plain cast would turn 2**32 + fd into fd.
int Descriptor(const Napi::Value& v, const char* name, const char* syscall) {
  if (!v.IsNumber())
    throw Napi::TypeError::New(v.Env(), std::string(name) + " must be a number");
  double fd = v.As<Napi::Number>().DoubleValue();
  if (!(fd >= 0 && fd <= INT_MAX && fd == std::floor(fd)))
    throw ErrnoError(v.Env(), EBADF, syscall);
  return static_cast<int>(fd);
}

// Whether a splice's thread-safe function may still be called.
struct Gate {
  std::mutex mutex;
  bool open = true;
};

// Takes a splice's end to JavaScript. It refers to the handle weakly: the
// handle holds the splice, which holds this, and a cycle would keep a splice
// that never ran (and its descriptors) alive forever.
struct EndSender {
  EndSender(EndFunction tsfn, std::weak_ptr<Handle> handle,
            std::shared_ptr<Gate> gate)
      : tsfn(tsfn), handle(std::move(handle)), gate(std::move(gate)) {}
  EndSender(const EndSender&) = delete;
  EndSender& operator=(const EndSender&) = delete;

  EndFunction tsfn;
  std::weak_ptr<Handle> handle;
  std::shared_ptr<Gate> gate;
  bool sent = false;

  void Send(Result&& result) {
    std::lock_guard<std::mutex> lock(gate->mutex);
    sent = true;
    if (!gate->open) return;
    auto* d = new Delivery{handle, std::move(result)};
    if (tsfn.NonBlockingCall(d) != napi_ok) delete d;
    tsfn.Release();
  }

  // Destroyed unsent (the splice never ran, or the engine went first): the
  // thread-safe function must still be released, or it keeps Node running.
  ~EndSender() {
    std::lock_guard<std::mutex> lock(gate->mutex);
    if (!sent && gate->open) tsfn.Release();
  }
};

void DeliverEnd(Napi::Env env, Napi::Function on_end, std::nullptr_t*,
                Delivery* delivery) {
  std::unique_ptr<Delivery> d(delivery);
  Result* r = &d->result;
  if (HandleRef handle = d->handle.lock()) handle->live = false;
  if (env == nullptr) return;  // the environment is shutting down
  // No C++ exception may leave this callback (nothing above it catches).
  // lib/ turns its own exceptions into uncaught ones before they get here;
  // what remains is JavaScript that can no longer run (the environment is
  // exiting), and that is left pending for Node to drop.
  try {
    Napi::Value error = env.Undefined();
    if (r->reason == kError)
      error = ErrnoError(env, r->error, r->syscall).Value();
    Napi::Value residual = env.Undefined();
    if (!r->residual.empty())
      residual = Napi::Buffer<char>::Copy(env, r->residual.data(),
                                          r->residual.size());
    on_end.Call({Napi::Number::New(env, static_cast<double>(r->bytes)),
                 Napi::Number::New(env, r->reason), error, residual});
  } catch (const Napi::Error& e) {
    // The C call, which reports rather than throws when it cannot.
    napi_throw(env, e.Value());
  }
}

// start(sourceFd, drainFd, max, idleMs, returnResidual,
//       onEnd(bytes, reason, error, residual)): validates and holds; run() starts
// the moving.
Napi::Value StartSplice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int source = Descriptor(info[0], "source fd", "splice");
  int drain = Descriptor(info[1], "drain fd", "splice");
  Options options;
  options.max = NonNegative(info[2], "max");
  options.idle_ms = NonNegative(info[3], "idle");
  options.return_residual = info[4].ToBoolean();
  if (!info[5].IsFunction())
    throw Napi::TypeError::New(env, "onEnd must be a function");

  auto handle = std::make_shared<Handle>();
  // When the environment is torn down Node frees the thread-safe function
  // even while a worker still holds it; its finalizer shuts the gate first.
  auto gate = std::make_shared<Gate>();
  handle->tsfn = EndFunction::New(
      env, info[5].As<Napi::Function>(), "sosplice", 0, 1, nullptr,
      [gate](Napi::Env, void*, std::nullptr_t*) {
        std::lock_guard<std::mutex> lock(gate->mutex);
        gate->open = false;
      });
  auto sender = std::make_shared<EndSender>(handle->tsfn, handle, gate);
  EndCallback on_end = [sender](Result&& result) {
    sender->Send(std::move(result));
  };

  SysError err;
  Addon* addon = env.GetInstanceData<Addon>();
  // On failure on_end is gone with the splice, and the function released.
  handle->splice =
      Start(*addon->engine, source, drain, options, std::move(on_end), &err);
  if (!handle->splice) throw ErrnoError(env, err.error, err.syscall);
  return Napi::External<HandleRef>::New(
      env, new HandleRef(handle), [](Napi::Env, HandleRef* h) { delete h; });
}

Napi::Value RunSplice(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  if (h->live) Run(h->splice);
  return info.Env().Undefined();
}

// stop(handle, reason)
Napi::Value StopSplice(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  int reason = info[1].As<Napi::Number>().Int32Value();
  if (reason != kUnsplice && reason != kClose)
    throw Napi::RangeError::New(info.Env(), "reason must be unsplice or close");
  if (h->live) Stop(h->splice, static_cast<Reason>(reason));
  return info.Env().Undefined();
}

Napi::Value SpliceBytes(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  return Napi::Number::New(info.Env(),
                           static_cast<double>(Bytes(*h->splice)));
}

// ref(handle, on): whether a live splice keeps the event loop alive.
Napi::Value RefSplice(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  if (h->live) {
    if (info[1].ToBoolean())
      h->tsfn.Ref(info.Env());
    else
      h->tsfn.Unref(info.Env());
  }
  return info.Env().Undefined();
}

Napi::Value EngineStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Stats stats = GetStats(*env.GetInstanceData<Addon>()->engine);
  Napi::Object out = Napi::Object::New(env);
  out.Set("workers", stats.workers);
  out.Set("splices", stats.splices);
  out.Set("pooledPipes", stats.pooled_pipes);
  out.Set("descriptors", stats.descriptors);
  out.Set("pipes", stats.pipes);
  out.Set("pipeBytes", static_cast<double>(stats.pipe_bytes));
  out.Set("pipeBudget", static_cast<double>(stats.pipe_budget));
  out.Set("pipeResizesRefused", stats.pipe_resizes_refused);
  out.Set("pipesUndersized", stats.pipes_undersized);
  return out;
}

// identity(fd): "<st_dev>:<st_ino>", the same for every descriptor of one
// socket, so that a descriptor closed and reused for another shows.
Napi::Value Identity(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SocketId id;
  SysError err;
  if (!IdentifySocket(Descriptor(info[0], "fd", "fstat"), &id, &err))
    throw ErrnoError(env, err.error, err.syscall);
  return Napi::String::New(
      env, std::to_string(id.first) + ":" + std::to_string(id.second));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new Addon());
  exports.Set("backend", Napi::String::New(env, BackendName()));
  exports.Set("start", Napi::Function::New(env, StartSplice));
  exports.Set("run", Napi::Function::New(env, RunSplice));
  exports.Set("stop", Napi::Function::New(env, StopSplice));
  exports.Set("bytes", Napi::Function::New(env, SpliceBytes));
  exports.Set("ref", Napi::Function::New(env, RefSplice));
  exports.Set("stats", Napi::Function::New(env, EngineStats));
  exports.Set("identity", Napi::Function::New(env, Identity));
  return exports;
}

}  // namespace sosplice

using sosplice::Init;
NODE_API_MODULE(sosplice, Init)

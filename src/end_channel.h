// The engine's ends, carried from its threads to the main thread: one
// thread-safe function per environment, called once for every batch of ends
// that piled up meanwhile, rather than one function and one thread hop per
// relay. It keeps the event loop alive while any relay that asked to (ref)
// is live.
#pragma once

#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "splice.h"

namespace sosplice {

class EndChannel;

// What a JavaScript relay handle refers to. Main thread only.
struct Handle {
  std::shared_ptr<Relay> relay;
  Napi::FunctionReference on_end;  // onEnd(flow, bytes, reason, error, residual)
  std::shared_ptr<EndChannel> channel;
  bool live = true;   // false once its last end was delivered, or it was dropped
  bool refed = true;  // counts towards keeping the loop alive while live
};

class EndChannel : public std::enable_shared_from_this<EndChannel> {
 public:
  static std::shared_ptr<EndChannel> New(Napi::Env env);

  // The engine's callback for `handle`'s relay: queues its ends, on any thread.
  EndCallback For(const std::shared_ptr<Handle>& handle);

  // Main thread. A handle that started counts until its end is delivered,
  // it is unref'd, or JavaScript drops it.
  void Hold(Napi::Env env, Handle& handle);
  void Ref(Napi::Env env, Handle& handle, bool on);
  void Forget(Napi::Env env, Handle& handle);

 private:
  struct Delivery {
    std::weak_ptr<Handle> handle;  // JavaScript may have dropped it meanwhile
    Result result;
  };

  static void Deliver(Napi::Env env, Napi::Function, EndChannel* channel,
                      std::nullptr_t*);
  using Function = Napi::TypedThreadSafeFunction<EndChannel, std::nullptr_t,
                                                 &EndChannel::Deliver>;

  void Send(std::weak_ptr<Handle> handle, Result&& result);
  void Requeue(std::vector<Delivery>& batch, size_t from);
  void Count(Napi::Env env, int change);

  std::mutex mutex_;
  bool open_ = true;        // false once Node has finalized the function
  bool scheduled_ = false;  // a call is on its way to the main thread
  std::vector<Delivery> queue_;
  Function function_;
  int refs_ = 0;  // main thread: live handles that keep the loop alive
};

}  // namespace sosplice

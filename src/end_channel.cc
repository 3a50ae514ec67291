#include "end_channel.h"

#include "errno_error.h"

#include <iterator>

namespace sosplice {

std::shared_ptr<EndChannel> EndChannel::New(Napi::Env env) {
  std::shared_ptr<EndChannel> channel(new EndChannel());
  // The function holds the channel until Node finalizes it, which it does at
  // teardown even while engine threads could still call it: the finalizer
  // closes the channel first.
  auto* keep = new std::shared_ptr<EndChannel>(channel);
  channel->function_ = Function::New(
      env, "sosplice", 0, 1, channel.get(),
      [](Napi::Env, std::shared_ptr<EndChannel>* keep, EndChannel* channel) {
        {
          std::lock_guard<std::mutex> lock(channel->mutex_);
          channel->open_ = false;
          channel->queue_.clear();
        }
        delete keep;
      },
      keep);
  channel->function_.Unref(env);  // until a splice holds it
  return channel;
}

EndCallback EndChannel::For(const std::shared_ptr<Handle>& handle) {
  return [channel = shared_from_this(),
          weak = std::weak_ptr<Handle>(handle)](Result&& result) {
    channel->Send(weak, std::move(result));
  };
}

void EndChannel::Send(std::weak_ptr<Handle> handle, Result&& result) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!open_) return;
  queue_.push_back({std::move(handle), std::move(result)});
  if (scheduled_) return;  // the call on its way takes this one too
  scheduled_ = function_.NonBlockingCall() == napi_ok;
}

void EndChannel::Deliver(Napi::Env env, Napi::Function, EndChannel* channel,
                         std::nullptr_t*) {
  if (env == nullptr) return;  // the environment is shutting down
  std::vector<Delivery> batch;
  {
    std::lock_guard<std::mutex> lock(channel->mutex_);
    batch.swap(channel->queue_);
    channel->scheduled_ = false;
  }
  for (size_t i = 0; i < batch.size(); i++) {
    std::shared_ptr<Handle> handle = batch[i].handle.lock();
    if (!handle || !handle->live) continue;  // dropped: nobody to tell
    Result& r = batch[i].result;
    // No C++ exception may leave this callback (nothing above it catches).
    // lib/ turns its own exceptions into uncaught ones before they get here;
    // what remains is JavaScript that can no longer run (the environment is
    // exiting), and that is left pending for Node to drop. An end whose
    // arguments could not be made stays queued, with the ones after it.
    try {
      Napi::Value error = env.Undefined();
      if (r.reason == kError) error = ErrnoError(env, r.error, r.syscall).Value();
      Napi::Value residual = env.Undefined();
      if (!r.residual.empty())
        residual = Napi::Buffer<char>::Copy(env, r.residual.data(),
                                            r.residual.size());
      Napi::FunctionReference on_end;
      if (r.last) {
        channel->Forget(env, *handle);
        on_end = std::move(handle->on_end);
      }
      Napi::FunctionReference& call = r.last ? on_end : handle->on_end;
      try {
        call.Call({Napi::Number::New(env, r.flow),
                   Napi::Number::New(env, static_cast<double>(r.bytes)),
                   Napi::Number::New(env, r.reason), error, residual,
                   Napi::Number::New(env, static_cast<double>(r.datagrams))});
      } catch (const Napi::Error& e) {
        channel->Requeue(batch, i + 1);
        napi_throw(env, e.Value());
        return;
      }
    } catch (const std::exception&) {
      // Napi::Error too: no memory for the arguments; try again later.
      channel->Requeue(batch, i);
      return;
    }
  }
}

// The ends after one whose callback threw go out with the next call.
void EndChannel::Requeue(std::vector<Delivery>& batch, size_t from) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!open_ || from == batch.size()) return;
  queue_.insert(queue_.begin(), std::make_move_iterator(batch.begin() + from),
                std::make_move_iterator(batch.end()));
  if (!scheduled_) scheduled_ = function_.NonBlockingCall() == napi_ok;
}

void EndChannel::Hold(Napi::Env env, Handle& handle) {
  handle.live = handle.refed = true;
  Count(env, +1);
}

void EndChannel::Ref(Napi::Env env, Handle& handle, bool on) {
  if (!handle.live || handle.refed == on) return;
  handle.refed = on;
  Count(env, on ? +1 : -1);
}

void EndChannel::Forget(Napi::Env env, Handle& handle) {
  if (!handle.live) return;
  handle.live = false;
  if (handle.refed) Count(env, -1);
}

// Ref and Unref are main-thread calls, as is the finalizer that closes the
// channel, so `open_` needs no lock here.
void EndChannel::Count(Napi::Env env, int change) {
  int before = refs_;
  refs_ += change;
  if (!open_) return;
  if (before == 0 && refs_ > 0) function_.Ref(env);
  if (before > 0 && refs_ == 0) function_.Unref(env);
}

}  // namespace sosplice

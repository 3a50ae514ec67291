// The addon's entry: turns JavaScript values into engine calls and engine
// results back into JavaScript values. Policy lives in lib/.
#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <string>

#include "end_channel.h"
#include "errno_error.h"
#include "posix.h"
#include "splice.h"
#include "strays.h"

namespace sosplice {
namespace {

struct Addon {
  std::unique_ptr<Engine, void (*)(Engine*)> engine = CreateEngine();
  std::shared_ptr<EndChannel> channel;
};

using HandleRef = std::shared_ptr<Handle>;

HandleRef& Unwrap(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal())
    throw Napi::TypeError::New(info.Env(), "expected a relay handle");
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

// start(fd0, fd1, max0, max1, idleMs, flags,
//       onEnd(flow, bytes, reason, error, residual, datagrams)[, prefix0, prefix1]):
// flow 0 moves fd0 into fd1, flow 1 fd1 into fd0; `flags` (kFlag*) says
// which run and how; a prefix (a Buffer) goes to the flow's drain first.
enum Flag {
  kFlow0 = 1,
  kFlow1 = 2,
  kEnd0 = 4,      // shut fd1's write side after fd0's EOF
  kEnd1 = 8,      // and fd0's after fd1's
  kChecked = 16,  // Node sockets, already checked in JavaScript
  kResidual = 32,
  kRun = 64,      // start moving now, not at run()
  kDatagram = 128,  // with kChecked: Node dgram sockets
};

Napi::Value StartRelay(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RelaySpec spec;
  for (int i = 0; i < 2; i++)
    spec.fd[i] = Descriptor(info[i], i == 0 ? "fd0" : "fd1", "splice");
  int64_t idle = NonNegative(info[4], "idle");
  int64_t flags = NonNegative(info[5], "flags");
  for (int f = 0; f < 2; f++) {
    Options& o = spec.flow[f];
    o.on = flags & (kFlow0 << f);
    o.max = NonNegative(info[2 + f], f == 0 ? "max0" : "max1");
    o.idle_ms = idle;
    o.end = flags & (kEnd0 << f);
    o.return_residual = flags & kResidual;
  }
  spec.checked = flags & kChecked;
  spec.datagram = spec.checked && (flags & kDatagram);
  if (!spec.flow[0].on && !spec.flow[1].on)
    throw Napi::RangeError::New(env, "flags name no flow");
  if (!info[6].IsFunction())
    throw Napi::TypeError::New(env, "onEnd must be a function");
  for (int f = 0; f < 2; f++) {
    Napi::Value v = info[7 + f];
    if (v.IsUndefined()) continue;
    if (!v.IsBuffer())
      throw Napi::TypeError::New(env, f == 0 ? "prefix0 must be a Buffer"
                                             : "prefix1 must be a Buffer");
    auto bytes = v.As<Napi::Buffer<char>>();
    spec.prefix[f].assign(bytes.Data(), bytes.Data() + bytes.Length());
  }

  Addon* addon = env.GetInstanceData<Addon>();
  auto handle = std::make_shared<Handle>();
  handle->channel = addon->channel;
  SysError err;
  handle->relay = Start(*addon->engine, std::move(spec), addon->channel->For(handle), &err);
  if (!handle->relay) throw ErrnoError(env, err.error, err.syscall);
  handle->on_end = Napi::Persistent(info[6].As<Napi::Function>());
  addon->channel->Hold(env, *handle);
  if (flags & kRun) Run(handle->relay);
  return Napi::External<HandleRef>::New(
      env, new HandleRef(handle), [](Napi::Env env, HandleRef* h) {
        (*h)->channel->Forget(env, **h);
        delete h;
      });
}

Napi::Value RunRelay(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  if (h->live) Run(h->relay);
  return info.Env().Undefined();
}

// stop(handle, reason)
Napi::Value StopRelay(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  int reason = info[1].As<Napi::Number>().Int32Value();
  if (reason != kUnsplice && reason != kClose)
    throw Napi::RangeError::New(info.Env(), "reason must be unsplice or close");
  if (h->live) Stop(h->relay, static_cast<Reason>(reason));
  return info.Env().Undefined();
}

// bytes(handle, flow)
Napi::Value FlowBytes(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  int flow = info[1].ToNumber().Int32Value() == 1 ? 1 : 0;
  return Napi::Number::New(info.Env(),
                           static_cast<double>(Bytes(*h->relay, flow)));
}

// ref(handle, on): whether a live relay keeps the event loop alive.
Napi::Value RefRelay(const Napi::CallbackInfo& info) {
  HandleRef& h = Unwrap(info);
  h->channel->Ref(info.Env(), *h, info[1].ToBoolean());
  return info.Env().Undefined();
}

Napi::Value EngineStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Stats stats = GetStats(*env.GetInstanceData<Addon>()->engine);
  Napi::Object out = Napi::Object::New(env);
  out.Set("workers", stats.workers);
  out.Set("relays", stats.relays);
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
  return Napi::String::New(env, SocketIdText(id));
}

// A sender's address as Node writes it in `rinfo`: a link-local IPv6
// address with its interface ("fe80::1%eth0").
Napi::Object Sender(Napi::Env env, const sockaddr_storage& from) {
  char text[INET6_ADDRSTRLEN + 1 + UV_IF_NAMESIZE] = "";
  int port;
  if (from.ss_family == AF_INET) {
    auto& in = reinterpret_cast<const sockaddr_in&>(from);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof text);
    port = ntohs(in.sin_port);
  } else {
    auto& in6 = reinterpret_cast<const sockaddr_in6&>(from);
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof text);
    port = ntohs(in6.sin6_port);
    size_t len = std::strlen(text);
    size_t room = sizeof text - len - 1;
    if (IN6_IS_ADDR_LINKLOCAL(&in6.sin6_addr) && in6.sin6_scope_id > 0 &&
        uv_if_indextoiid(in6.sin6_scope_id, text + len + 1, &room) == 0)
      text[len] = '%';
  }
  Napi::Object sender = Napi::Object::New(env);
  sender.Set("address", Napi::String::New(env, text));
  sender.Set("family", Napi::String::New(env, from.ss_family == AF_INET ? "IPv4" : "IPv6"));
  sender.Set("port", Napi::Number::New(env, port));
  return sender;
}

// sendMarker(fd): where the socket goes back to, opaque. See strays.h.
Napi::Value SendMarkerOn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Return back;
  SysError err;
  if (!SendMarker(Descriptor(info[0], "fd", "getpeername"), &back, &err))
    throw ErrnoError(env, err.error, err.syscall);
  return Napi::Buffer<char>::Copy(env, reinterpret_cast<char*>(&back), sizeof back);
}

// takeStrays(fd, back, force): { strays: [{ data, address, family, port }]
// in arrival order, done, error?, marker? }: the marker's address once
// done by force, since it may still come. See strays.h.
Napi::Value TakeStraysOf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Descriptor(info[0], "fd", "recvmsg");
  Return back;
  if (!info[1].IsBuffer() || info[1].As<Napi::Buffer<char>>().Length() != sizeof back)
    throw Napi::TypeError::New(env, "back must be sendMarker()'s Buffer");
  std::memcpy(&back, info[1].As<Napi::Buffer<char>>().Data(), sizeof back);
  int family = back.peer.ss_family;
  if (!(family == AF_INET && back.peer_len == sizeof(sockaddr_in)) &&
      !(family == AF_INET6 && back.peer_len == sizeof(sockaddr_in6)))
    throw Napi::TypeError::New(env, "back must be sendMarker()'s Buffer");
  std::vector<Stray> strays;
  bool done;
  SysError err;
  bool ok = TakeStrays(fd, back, info[2].ToBoolean(), &strays, &done, &err);
  Napi::Array list = Napi::Array::New(env, strays.size());
  for (size_t i = 0; i < strays.size(); i++) {
    Napi::Object stray = Sender(env, strays[i].from);
    stray.Set("data", Napi::Buffer<char>::Copy(env, strays[i].data.data(), strays[i].data.size()));
    list.Set(i, stray);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("strays", list);
  out.Set("done", ok && done);
  if (ok && done && info[2].ToBoolean()) out.Set("marker", Sender(env, back.marker));
  // Failed: what was read is still another flow's to send on.
  if (!ok) out.Set("error", ErrnoError(env, err.error, err.syscall).Value());
  return out;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* addon = new Addon();
  addon->channel = EndChannel::New(env);
  env.SetInstanceData(addon);
  exports.Set("backend", Napi::String::New(env, BackendName()));
  exports.Set("start", Napi::Function::New(env, StartRelay));
  exports.Set("run", Napi::Function::New(env, RunRelay));
  exports.Set("stop", Napi::Function::New(env, StopRelay));
  exports.Set("bytes", Napi::Function::New(env, FlowBytes));
  exports.Set("ref", Napi::Function::New(env, RefRelay));
  exports.Set("stats", Napi::Function::New(env, EngineStats));
  exports.Set("identity", Napi::Function::New(env, Identity));
  exports.Set("sendMarker", Napi::Function::New(env, SendMarkerOn));
  exports.Set("takeStrays", Napi::Function::New(env, TakeStraysOf));
  return exports;
}

}  // namespace sosplice

using sosplice::Init;
NODE_API_MODULE(sosplice, Init)

#include "errno_error.h"

#include <uv.h>

#include <cstring>
#include <string>

namespace sosplice {

Napi::Error ErrnoError(Napi::Env env, int error, const char* syscall) {
  // libuv's error codes are negated errno values on Unix, so its name table
  // gives the same `code` strings Node uses.
  const char* code = uv_err_name(-error);
  std::string message =
      std::string(syscall) + " " + code + " (" + std::strerror(error) + ")";
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("errno", Napi::Number::New(env, -error));
  err.Set("code", Napi::String::New(env, code));
  err.Set("syscall", Napi::String::New(env, syscall));
  return err;
}

}  // namespace sosplice

#pragma once

#include <napi.h>

namespace sosplice {

// An Error shaped like Node's own system errors: message "<syscall> <CODE>
// (<description>)", with `errno` (negative, as in Node), `code` and `syscall`.
Napi::Error ErrnoError(Napi::Env env, int error, const char* syscall);

}  // namespace sosplice

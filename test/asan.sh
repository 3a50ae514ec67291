#!/usr/bin/env bash
# The test suite against the addon built with AddressSanitizer and
# UndefinedBehaviorSanitizer. Node itself is not instrumented, so the
# runtimes are preloaded; leak detection is off because Node does not free
# everything at exit. Any report fails the run. The normal build is restored
# afterwards, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
trap 'npx node-gyp rebuild >/dev/null' EXIT
CXXFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
  LDFLAGS="-fsanitize=address,undefined" npx node-gyp rebuild >/dev/null
npx tsc -p .
LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libubsan.so)" \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  npx mocha "$@"

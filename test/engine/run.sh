#!/bin/sh
# npm run test:engine: builds and runs the engine's own tests with the
# system's C++ compiler ($CXX, else c++): the end-reason decision table of
# the so_splice engine (on every host), then the contract test against this
# host's engine (so_splice on OpenBSD and FreeBSD, pipe on Linux).
set -eu
cd "$(dirname "$0")/../.."
CXX=${CXX:-c++}
out=${TMPDIR:-/tmp}/sosplice-engine-test.$$
trap 'rm -f "$out.decide" "$out.engine"' EXIT INT TERM
flags="-std=c++17 -O1 -g -Wall -Wextra -pthread"
case "$(uname -s)" in
  Linux) engine="src/splice_linux.cc src/datagram_pump.cc" ;;
  FreeBSD) engine="src/splice_bsd.cc src/bsd_end.cc src/datagram_pump.cc" ;;
  OpenBSD) engine="src/splice_bsd.cc src/bsd_end.cc" ;;
  *) echo "test:engine: no kernel engine on $(uname -s)"; exit 0 ;;
esac
$CXX $flags -o "$out.decide" test/engine/bsd_end_test.cc src/bsd_end.cc
"$out.decide"
$CXX $flags -o "$out.engine" test/engine/engine_test.cc $engine src/strays.cc
"$out.engine" "$@"

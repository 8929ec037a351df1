#!/bin/sh
# Builds examples/wasm-echo/echo.c into a freestanding WebAssembly module with Debian's
# clang and lld (apt-get install clang lld) and prints the module's path as its last line.
# WASM_ECHO_OUT: the output directory (default examples/wasm-echo/target);
# WASM_ECHO_CFLAGS: more clang flags (the benchmarks build variants with -DTAG=n).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="${WASM_ECHO_OUT:-$here/target}"
mkdir -p "$out"
# shellcheck disable=SC2086 # WASM_ECHO_CFLAGS is a list of flags
clang --target=wasm32 -O2 ${WASM_ECHO_CFLAGS:-} -nostdlib -fno-builtin \
    -Wl,--no-entry -Wl,--export-dynamic -Wl,--initial-memory=131072 -Wl,-z,stack-size=32768 \
    -o "$out/wasm-echo.wasm" "$here/echo.c"
echo "$out/wasm-echo.wasm"

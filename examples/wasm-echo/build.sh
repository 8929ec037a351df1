#!/bin/sh
# Builds examples/wasm-echo/echo.c into a freestanding WebAssembly module with Debian's
# clang and lld (apt-get install clang lld) and prints the module's path as its last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="${WASM_ECHO_OUT:-$here/target}"
mkdir -p "$out"
clang --target=wasm32 -O2 -nostdlib -fno-builtin \
    -Wl,--no-entry -Wl,--export-dynamic -Wl,--initial-memory=131072 -Wl,-z,stack-size=32768 \
    -o "$out/wasm-echo.wasm" "$here/echo.c"
echo "$out/wasm-echo.wasm"

#!/usr/bin/env bash
# Run the whole test suite: unit tests and the integration tests, which drive a real Docker
# engine, a real SQLite file and the real binaries. Installs and starts what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
# Tools the tests drive: setpriv (a caller outside the socket group), curl, promtool
# (checks the /metrics exposition), tmux (drives the dashboard).
missing=()
command -v setpriv >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
command -v promtool >/dev/null || missing+=(prometheus)
command -v tmux >/dev/null || missing+=(tmux)
# clang and lld build the WebAssembly example (examples/wasm-echo, tests/wasm.rs).
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld)
if ((${#missing[@]})); then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash scripts/build-sample-image.sh >/dev/null
# The official MCP Python client, which tests/mcp.rs drives the MCP server with.
bash scripts/mcp-venv.sh
# schemathesis, which tests/openapi.rs runs against a live daemon's OpenAPI document.
bash scripts/schemathesis-venv.sh
# The GraphQL client (gql, over aiohttp and websockets), which tests/graphql.rs drives /graphql with.
bash scripts/graphql-venv.sh
bash examples/wasm-echo/build.sh >/dev/null
# The package tests (tests/system.rs) build, lint and install the .deb and .rpm.
bash scripts/package.sh --ensure-tools
cargo test --workspace "$@"

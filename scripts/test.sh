#!/usr/bin/env bash
# Run the whole test suite: unit tests and the integration tests, which drive a real Docker
# engine, a real SQLite file and the real binaries. Installs and starts what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-docker.sh
command -v setpriv >/dev/null || { apt-get install -y util-linux >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y curl >/dev/null; }
bash scripts/build-sample-image.sh >/dev/null
cargo test --workspace "$@"

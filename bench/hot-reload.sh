#!/usr/bin/env bash
# Issue 13 §4: publish (build with cached layers + health-gated upgrade of a 3-replica addon)
# → every instance answering with the new code, addond against `docker build` + `docker rm -f`
# + `docker run` of the same 3 containers, side by side in one run (see bench/hot-reload.py).
# Uses the release binaries (BENCH_SKIP_BUILD=1 to not build), ports 8900–8963, the subnet
# pool 172.28.0.0/16; removes what it made. BENCH_PUBLISHES (20) publishes per target.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"
ensure_tools
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect addond-sample:latest >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
machine_info >&2
python3 "$BENCH_DIR/hot-reload.py" "${ADDOND_BIN:-$ADDOND}" "${ADDONCTL_BIN:-$ADDONCTL}" "${BENCH_PUBLISHES:-20}"

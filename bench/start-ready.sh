#!/usr/bin/env bash
# Benchmark 2: daemon start → ready, with 100 services and with none, in one hyperfine run.
#
# Setup (not measured): a data dir with 100 services (memory 16m, cpu 0.05) created through
# the API and all Started, then the daemon is stopped with SIGTERM (containers keep running);
# and a data dir with no services (initialised by one start). Measured, per run
# (bench/daemon-ready.sh): exec addond → ready → SIGTERM sent. Four commands:
#   0 services          ready = GET /health answers
#   100 services, /health   ready = GET /health answers (nothing else)
#   100 services, API   ready = GET /health answers and all 100 report phase Started
#   100 services, probed  ... and the health monitor has an established connection to each of
#                       the 100 instances (the resync adopted and re-probed every container)
# Each run's --prepare waits for the previous daemon to have exited (flock on its pid file)
# and sleeps 0.5 s.
#
#   BENCH_RUNS (20), BENCH_WARMUP (2), BENCH_OUT, BENCH_TMP
#   BENCH_HUNDRED_DIR  an existing data dir made by setup_services (run.sh passes it; it is
#                      then left in place), else one is made and torn down here
#   BENCH_SERVICES     number of services (100)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="${BENCH_RUNS:-20}"
warmup="${BENCH_WARMUP:-2}"
n="${BENCH_SERVICES:-100}"
out="${BENCH_OUT:-$BENCH_DIR/results}"
mkdir -p "$out"
ensure_tools
[[ -x "$ADDOND" && -x "$ADDONCTL" ]] || die "release binaries missing: cargo build --release --bins"

empty="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-empty.XXXXXX")"
hundred="${BENCH_HUNDRED_DIR:-}"
own_hundred=0
cleanup() {
    stop_daemon "$empty" || true
    rm -rf "$empty"
    if ((own_hundred)); then
        teardown_services "$hundred"
        remove_bench_networks
    else
        stop_daemon "$hundred" || true
    fi
}
trap cleanup EXIT
if [[ -z "$hundred" ]]; then
    hundred="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-hundred.XXXXXX")"
    own_hundred=1
    setup_services "$hundred" "$n"
fi
setup_services "$empty" 0

prep() { echo "flock -w 60 $1/data/addond.pid true && sleep 0.5"; }
args=(--style basic --warmup "$warmup" --runs "$runs"
    --export-json "$out/start-ready.json" --export-markdown "$out/start-ready.md"
    --prepare "$(prep "$empty")" --prepare "$(prep "$hundred")" --prepare "$(prep "$hundred")" --prepare "$(prep "$hundred")"
    -n "start → ready, 0 services" "$BENCH_DIR/daemon-ready.sh $empty 0 api"
    -n "start → /health answers, $n services" "$BENCH_DIR/daemon-ready.sh $hundred $n health"
    -n "start → ready, $n services (API: all Started)" "$BENCH_DIR/daemon-ready.sh $hundred $n api"
    -n "start → ready, $n services (all re-probed)" "$BENCH_DIR/daemon-ready.sh $hundred $n probed")
echo "hyperfine ${args[*]@Q}" >"$out/start-ready.cmd"
hyperfine "${args[@]}" | tee "$out/start-ready.txt"
wait_stopped "$hundred"

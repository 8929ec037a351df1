#!/usr/bin/env bash
# Runs the three addond benchmarks of the foundation issue and prints a summary:
#   1. create → healthy through addond vs plain docker   (bench/create-healthy.sh)
#   2. daemon start → ready with 100 services and none    (bench/start-ready.sh)
#   3. idle RSS and CPU with 100 healthy services          (bench/idle-rss.sh)
# Installs what is missing (Docker engine, hyperfine, jq), builds the release binaries and the
# sample image, uses temp data dirs under $BENCH_TMP (/var/tmp), ports 8600–8999 and the
# networks addond_bench/addond_bench_isolated, and removes every container and network it made.
# Results (hyperfine JSON/Markdown/text) go to $BENCH_OUT (bench/results).
#
#   BENCH_SKIP_BUILD=1   use the release binaries as they are
#   BENCH_RUNS, BENCH_WARMUP, BENCH_SERVICES, BENCH_SETTLE, BENCH_IDLE: see the scripts
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

export BENCH_OUT="${BENCH_OUT:-$BENCH_DIR/results}"
mkdir -p "$BENCH_OUT"
n="${BENCH_SERVICES:-100}"

bash scripts/ensure-docker.sh
ensure_tools
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null

# Pin the binaries: other people build in the same target dir while this runs.
bin_dir="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-bin.XXXXXX")"
cp "$ADDOND" "$ADDONCTL" "$bin_dir/"
export ADDOND_BIN="$bin_dir/addond" ADDONCTL_BIN="$bin_dir/addonctl"
ADDOND="$ADDOND_BIN" ADDONCTL="$ADDONCTL_BIN"

hundred="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-hundred.XXXXXX")"
cleanup() {
    teardown_services "$hundred" || true
    docker_cleanup
    rm -rf "$bin_dir"
    leftover="$(docker ps -aq --filter "network=$BENCH_NETWORK" 2>/dev/null | wc -l)"
    say "cleaned up (containers left on $BENCH_NETWORK: $leftover)"
}
trap cleanup EXIT

{
    echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:      $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory:   $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel:   $(uname -sr)"
    echo "os:       $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "docker:   $(docker version --format '{{.Server.Version}}') ($(docker info --format '{{.Driver}}, cgroup v{{.CgroupVersion}}'))"
    echo "hyperfine: $(hyperfine --version | awk '{ print $2 }')"
    echo "addond:   $("$ADDOND" --version), built from $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') ($(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l) files under src/ changed or new since that commit)"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
} | tee "$BENCH_OUT/machine.txt"

say "=== 1. create → healthy: addond vs plain docker ==="
echo "bench1: machine $(wait_quiet)% busy before it started" | tee -a "$BENCH_OUT/machine.txt" >&2
bash "$BENCH_DIR/create-healthy.sh"

say "=== setup: $n services for benchmarks 2 and 3 ==="
setup_services "$hundred" "$n"
export BENCH_HUNDRED_DIR="$hundred"

say "=== 2. daemon start → ready ==="
echo "bench2: machine $(wait_quiet)% busy before it started" | tee -a "$BENCH_OUT/machine.txt" >&2
bash "$BENCH_DIR/start-ready.sh"

say "=== 3. idle RSS and CPU with $n services ==="
echo "bench3: machine $(wait_quiet)% busy before it started" | tee -a "$BENCH_OUT/machine.txt" >&2
bash "$BENCH_DIR/idle-rss.sh"

echo
echo "================ summary ================"
cat "$BENCH_OUT/machine.txt"
echo
echo "1. create → first successful health probe (hyperfine, mean ± σ):"
jq -r '.results[] | "   \(.command): \(.mean * 1000 | round) ms ± \(.stddev * 1000 | round) ms (median \(.median * 1000 | round) ms, min \(.min * 1000 | round), max \(.max * 1000 | round))"' "$BENCH_OUT/create-healthy.json"
sed 's/^/   /' "$BENCH_OUT/create-healthy-ratio.txt"
sed 's/^/   /' "$BENCH_OUT/create-healthy-phases.txt"
echo "2. daemon start → ready (hyperfine, mean ± σ):"
jq -r '.results[] | "   \(.command): \(.mean * 1000 | round) ms ± \(.stddev * 1000 | round) ms (median \(.median * 1000 | round) ms, max \(.max * 1000 | round))"' "$BENCH_OUT/start-ready.json"
echo "3. idle:"
sed 's/^/   /' "$BENCH_OUT/idle-rss.txt"

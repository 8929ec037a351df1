#!/usr/bin/env bash
# Benchmark 3: idle memory and CPU of addond with 100 healthy services.
# Starts the daemon on a data dir holding 100 services (memory 16m, cpu 0.05; their
# containers already run), waits until all are Started and re-probed, lets it idle for
# BENCH_SETTLE seconds (30), reads VmRSS/VmHWM (and RssAnon/RssFile, threads) from
# /proc/PID/status, then measures utime+stime from /proc/PID/stat over BENCH_IDLE seconds
# (30) and reads the memory figures again.
#
#   BENCH_HUNDRED_DIR (else one is made and torn down here), BENCH_SERVICES (100), BENCH_OUT
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

n="${BENCH_SERVICES:-100}"
settle="${BENCH_SETTLE:-30}"
idle="${BENCH_IDLE:-30}"
out="${BENCH_OUT:-$BENCH_DIR/results}"
mkdir -p "$out"
ensure_tools
[[ -x "$ADDOND" ]] || die "release binaries missing: cargo build --release --bins"

hundred="${BENCH_HUNDRED_DIR:-}"
own_hundred=0
cleanup() {
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

pid="$(start_daemon "$hundred")"
wait_all_started "$hundred" "$n" 120
say "benchmark 3: daemon pid $pid with $n services; idling ${settle}s, then measuring over ${idle}s"
sleep "$settle"
mem() {
    printf 'VmRSS %s kB, VmHWM %s kB (RssAnon %s kB, RssFile %s kB), threads %s' \
        "$(proc_status_kb "$pid" VmRSS)" "$(proc_status_kb "$pid" VmHWM)" \
        "$(proc_status_kb "$pid" RssAnon)" "$(proc_status_kb "$pid" RssFile)" \
        "$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status")"
}
m1="$(mem)"
c1="$(proc_cpu_ticks "$pid")"
t1=$(date +%s%N)
# Sample VmRSS and the thread count once a second while idling (the periodic resync runs
# every 30 s, so one falls inside the window).
samples="$out/idle-rss-samples.tsv"
printf 'second\tVmRSS_kB\tthreads\n' >"$samples"
for i in $(seq "$idle"); do
    sleep 1
    printf '%s\t%s\t%s\n' "$i" "$(proc_status_kb "$pid" VmRSS)" "$(awk '$1 == "Threads:" { print $2 }' "/proc/$pid/status")" >>"$samples"
done
c2="$(proc_cpu_ticks "$pid")"
t2=$(date +%s%N)
m2="$(mem)"
rss2="$(proc_status_kb "$pid" VmRSS)"
hwm="$(proc_status_kb "$pid" VmHWM)"
started="$(count_started "$hundred")"
hz="$(getconf CLK_TCK)"
secs="$(awk -v a="$t1" -v b="$t2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')"
cpu_s="$(awk -v t=$((c2 - c1)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }')"
cpu_pct="$(awk -v t=$((c2 - c1)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", t / hz / s * 100 }')"
{
    echo "addond idle with $started/$n services Started (pid $pid)"
    echo "after ${settle}s idle:       $m1"
    echo "after $((settle + idle))s idle:       $m2"
    awk -F'\t' 'NR > 1 { if (!r0 || $2 < r0) r0 = $2; if ($2 > r1) r1 = $2; if (!t0 || $3 < t0) t0 = $3; if ($3 > t1) t1 = $3 }
        END { printf "sampled each second:  VmRSS %d–%d kB, threads %d–%d\n", r0, r1, t0, t1 }' "$samples"
    echo "idle CPU over ${secs}s:   $((c2 - c1)) ticks (CLK_TCK $hz) = ${cpu_s} s CPU = ${cpu_pct}% of one core"
    awk -v r="$rss2" -v h="$hwm" 'BEGIN { printf "goal VmRSS < 30 MB (30720 kB): %s (VmRSS %.1f MiB, VmHWM %.1f MiB)\n", (r < 30720 ? "met" : "MISSED"), r / 1024, h / 1024 }'
} | tee "$out/idle-rss.txt"
stop_daemon "$hundred"

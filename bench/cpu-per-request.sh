#!/usr/bin/env bash
# CPU time a set of processes spends per request while wrk drives a URL: user and system
# time from /proc/PID/stat (utime, stime; CLK_TCK = 100) before and after the run, divided by
# the requests wrk completed. Used to tell where the time of a proxied call goes (addond,
# nginx, docker-proxy) on a machine whose cores the load generator shares.
#   bench/cpu-per-request.sh "PID [PID…]" CONNS SECONDS URL [wrk args…]
# Prints wrk's JSON summary (bench/addons-wrk.lua) and "user N µs, system N µs per request".
# BENCH_WRK_BODY / BENCH_WRK_PATH as for bench/addons-wrk.lua.
set -euo pipefail
pids="$1" conns="$2" secs="$3" url="$4"
shift 4
threads=2
((conns < 2)) && threads=1
ticks() {
    local u=0 s=0 p a b
    for p in $pids; do
        read -r a b < <(awk '{ print $14, $15 }' "/proc/$p/stat")
        u=$((u + a)) s=$((s + b))
    done
    echo "$u $s"
}
read -r u0 s0 < <(ticks)
out="$(wrk -t"$threads" -c"$conns" -d"${secs}s" -s "$(dirname "$0")/addons-wrk.lua" "$@" "$url" | grep '^{"label"' | tail -n1)"
read -r u1 s1 < <(ticks)
n="$(jq .requests <<<"$out")"
echo "$out"
# ticks are 10 ms = 10 000 µs
echo "user $(( (u1 - u0) * 10000 / n )) µs, system $(( (s1 - s0) * 10000 / n )) µs per request ($n requests)"

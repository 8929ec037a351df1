#!/usr/bin/env bash
# Issue 3 (addons): the cost of calling an addon through addond.
#
#   1. execute, wrk at 1 and 64 connections, side by side:
#      direct     POST /execute/echo straight to the container's host port (through Docker's
#                 port proxy), with the body addond sends there
#      direct-ctr the same straight to the container's own address, the way addond calls it
#      addond     POST /api/addons/bench-echo/execute on the gateway's TCP listener with an
#                 API key (wrk cannot speak to the admin Unix socket; the gateway runs the
#                 same Addons::execute_json as the socket route, plus the key check)
#      nginx      the same direct call through nginx reverse-proxying to the host port, with
#                 upstream keep-alive (nginx's best case)
#      nginx-ctr  nginx in front of the container's own address (what addond does, in nginx)
#   2. widget renders through the gateway, GET /api/widgets/bench-echo/checkout:
#      warm     the same config and context every time (cache hits after the first)
#      uncached a new value in `context` per request (a Lua counter): every request a miss
#
# Goals (issue 3): addond's p50 over direct < 100 µs; addond ≥ nginx's req/s; warm widget
# renders ≥ 20× uncached. Both are also reported against the container-address rows, so the
# gain from skipping Docker's port proxy can be told from the proxy's own cost.
#
# Uses the release binaries (BENCH_SKIP_BUILD=1 to not build), ports 8800–8899, 7180 (gateway),
# 7181 and 7183 (nginx), networks addond_bench2/addond_bench2_iso; removes every container it made.
# Results: $BENCH_OUT (bench/results)/addons-*.txt, wrk-*.txt.
#   BENCH_WRK_DURATION (10)  seconds per wrk run; BENCH_WRK_WARMUP (2) seconds of unrecorded warm-up per target
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

WARMUP="${BENCH_WRK_WARMUP:-2}"
ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT

machine_info | tee "$BENCH_OUT/addons-machine.txt" >&2
WRK_GROUP=addons; : >"$BENCH_OUT/wrk-summary-$WRK_GROUP.jsonl"
setup_echo

warm() { # a short unrecorded run: pools and caches filled, threads spawned
    wrk -t"$([[ $2 -lt 2 ]] && echo 1 || echo 2)" -c"$2" -d"${WARMUP}s" "${@:3}" "$1" >/dev/null 2>&1 || true
}

export BENCH_WRK_BODY BENCH_WRK_PATH=""
declare -A R
for conns in 1 64; do
    echo "addons c=$conns: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/addons-machine.txt" >&2
    BENCH_WRK_BODY="$DIRECT_BODY"
    warm "http://127.0.0.1:$ECHO_PORT/execute/echo" "$conns" -s "$BENCH_DIR/addons-wrk.lua"
    R[direct-$conns]="$(wrk_run "exec-direct-c$conns" "$conns" "http://127.0.0.1:$ECHO_PORT/execute/echo" -s "$BENCH_DIR/addons-wrk.lua")"
    warm "http://$ECHO_ADDR/execute/echo" "$conns" -s "$BENCH_DIR/addons-wrk.lua"
    R[direct-ctr-$conns]="$(wrk_run "exec-direct-ctr-c$conns" "$conns" "http://$ECHO_ADDR/execute/echo" -s "$BENCH_DIR/addons-wrk.lua")"
    BENCH_WRK_BODY="$EXEC_BODY"
    warm "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" "$conns" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY"
    R[addond-$conns]="$(wrk_run "exec-addond-c$conns" "$conns" "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY")"
    BENCH_WRK_BODY="$DIRECT_BODY"
    warm "http://127.0.0.1:$NGINX_PORT/execute/echo" "$conns" -s "$BENCH_DIR/addons-wrk.lua"
    R[nginx-$conns]="$(wrk_run "exec-nginx-c$conns" "$conns" "http://127.0.0.1:$NGINX_PORT/execute/echo" -s "$BENCH_DIR/addons-wrk.lua")"
    warm "http://127.0.0.1:$NGINX_PORT2/execute/echo" "$conns" -s "$BENCH_DIR/addons-wrk.lua"
    R[nginx-ctr-$conns]="$(wrk_run "exec-nginx-ctr-c$conns" "$conns" "http://127.0.0.1:$NGINX_PORT2/execute/echo" -s "$BENCH_DIR/addons-wrk.lua")"
done

# Widgets: the cache counters of /metrics tell hits from misses.
cache_counts() { api GET /metrics | awk '/^addond_widget_cache_hits_total/ { h = $2 } /^addond_widget_cache_misses_total/ { m = $2 } END { print h + 0, m + 0 }'; }
enc() { jq -rn --arg v "$1" '$v | @uri'; }
WIDGET_URL="http://$GATEWAY_ADDR/api/widgets/$ECHO_ADDON/checkout"
warm_q="config=$(enc '{"title":"Pay now"}')&context=$(enc '{"cart":"c-1","user":"bench"}')"
miss_q="config=$(enc '{"title":"Pay now"}')&context=$(enc '{"cart":"c-1","user":"')"'{N}'"$(enc '"}')"
curl -sS --fail-with-body -D - -o /dev/null -H "apikey: $API_KEY" "$WIDGET_URL?$warm_q" | grep -i '^x-cache' >&2
BENCH_WRK_BODY=""
echo "widgets: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/addons-machine.txt" >&2
declare -A W
for mode in warm uncached; do
    conns=64
    if [[ $mode == warm ]]; then BENCH_WRK_PATH=""; url="$WIDGET_URL?$warm_q"; else BENCH_WRK_PATH="/api/widgets/$ECHO_ADDON/checkout?$miss_q"; url="$WIDGET_URL"; fi
    warm "$url" "$conns" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY"
    read -r h0 m0 < <(cache_counts)
    W[$mode]="$(wrk_run "widget-$mode-c$conns" "$conns" "$url" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY")"
    read -r h1 m1 < <(cache_counts)
    echo "widget $mode: cache hits +$((h1 - h0)), misses +$((m1 - m0))" | tee "$BENCH_OUT/widget-$mode-cache.txt" >&2
done

f() { jq -r ".$2" <<<"$1"; }
{
    echo "Issue 3, execute (wrk ${WRK_DURATION}s per row; latency in µs):"
    printf '%-10s %5s %10s %8s %8s %8s %8s\n' path conns req/s p50 p90 p99 non2xx
    for conns in 1 64; do
        for t in direct direct-ctr addond nginx nginx-ctr; do
            j="${R[$t-$conns]}"
            printf '%-10s %5s %10.0f %8s %8s %8s %8s\n' "$t" "$conns" "$(f "$j" rps)" "$(f "$j" p50_us)" "$(f "$j" p90_us)" "$(f "$j" p99_us)" "$(( $(f "$j" non_2xx) + $(f "$j" socket_errors) ))"
        done
    done
    pct() { jq -rn "$1 as \$a | $2 as \$n | \$a.rps / \$n.rps * 100 | round"; }
    for conns in 1 64; do
        a="${R[addond-$conns]}"
        echo "c=$conns: addond p50 over direct (host port): $(( $(f "$a" p50_us) - $(f "${R[direct-$conns]}" p50_us) )) µs, over direct (container): $(( $(f "$a" p50_us) - $(f "${R[direct-ctr-$conns]}" p50_us) )) µs (goal < 100 µs)"
        echo "c=$conns: addond/nginx req/s: $(pct "$a" "${R[nginx-$conns]}")% (nginx → host port), $(pct "$a" "${R[nginx-ctr-$conns]}")% (nginx → container) (goal ≥ 100%)"
    done
    echo
    echo "Issue 3, widget renders through the gateway (64 connections):"
    for mode in warm uncached; do
        j="${W[$mode]}"
        printf '%-9s %10.0f req/s  p50 %6s µs  p99 %6s µs  non-2xx %s  (%s)\n' "$mode" "$(f "$j" rps)" "$(f "$j" p50_us)" "$(f "$j" p99_us)" "$(( $(f "$j" non_2xx) + $(f "$j" socket_errors) ))" "$(cat "$BENCH_OUT/widget-$mode-cache.txt")"
    done
    echo "warm / uncached: $(jq -rn "${W[warm]} as \$w | ${W[uncached]} as \$u | \$w.rps / \$u.rps * 10 | round / 10")× (goal ≥ 20×)"
} | tee "$BENCH_OUT/addons.txt"

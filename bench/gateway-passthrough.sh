#!/usr/bin/env bash
# Issue 4 (gateway): the gateway's cost over nginx, and the key check alone.
#
#   1. GET /gw/bench-echo/health with a valid API key (passthrough to the addon's rest_api
#      service) vs nginx reverse-proxying GET /health to the same container (upstream
#      keep-alive: nginx's best case), once to its host port (through Docker's port proxy, as
#      an operator would set nginx up) and once to its own address (as addond reaches it), vs
#      the container's host port straight; wrk, 64 connections, 10 s each, side by side. Also
#      the gateway's own GET /health (no key, no upstream): the ceiling of its HTTP stack on
#      this machine.
#   2. POST /api/addons/bench-echo/execute through the gateway vs the same call through both
#      nginx servers (64 connections), rerun here side by side with 1 so they share one
#      machine state.
#   3. cargo bench --bench keycheck (criterion): parse the key, find the grant among 1000,
#      SHA-256 + constant-time compare, take a rate-limit token. Goal < 5 µs.
#
# Goals (issue 4): passthrough and execute at least nginx's req/s; key check < 5 µs.
# Same daemon setup and cleanup as bench/addons-execute.sh (bench/addons-lib.sh).
#   BENCH_SKIP_KEYCHECK=1  skip the criterion bench
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

WARMUP="${BENCH_WRK_WARMUP:-2}"
ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
if [[ "${BENCH_SKIP_KEYCHECK:-0}" != 1 ]]; then
    say "cargo bench --bench keycheck --no-run"
    cargo bench --bench keycheck --no-run 2>&1 | tail -2 >&2
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT

machine_info | tee "$BENCH_OUT/gateway-machine.txt" >&2
WRK_GROUP=gateway; : >"$BENCH_OUT/wrk-summary-$WRK_GROUP.jsonl"
setup_echo
via_gw="$(curl -sS --fail-with-body -H "apikey: $API_KEY" "http://$GATEWAY_ADDR/gw/$ECHO_ADDON/health" | jq -c 'del(.uptime_ms)')"
via_nginx="$(curl -sS --fail-with-body "http://127.0.0.1:$NGINX_PORT/health" | jq -c 'del(.uptime_ms)')"
say "passthrough → $via_gw; nginx → $via_nginx"
[[ "$via_gw" == "$via_nginx" ]] || die "passthrough and nginx answer differently"

warm() { wrk -t2 -c64 -d"${WARMUP}s" "${@:2}" "$1" >/dev/null 2>&1 || true; }
LUA=(-s "$BENCH_DIR/addons-wrk.lua")
KEY=(-H "apikey: $API_KEY")
export BENCH_WRK_BODY="" BENCH_WRK_PATH=""
declare -A R
echo "gateway passthrough: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/gateway-machine.txt" >&2
warm "http://127.0.0.1:$ECHO_PORT/health" "${LUA[@]}"
R[direct]="$(wrk_run "health-direct-c64" 64 "http://127.0.0.1:$ECHO_PORT/health" "${LUA[@]}")"
warm "http://$GATEWAY_ADDR/gw/$ECHO_ADDON/health" "${LUA[@]}" "${KEY[@]}"
R[gw]="$(wrk_run "health-gateway-c64" 64 "http://$GATEWAY_ADDR/gw/$ECHO_ADDON/health" "${LUA[@]}" "${KEY[@]}")"
warm "http://127.0.0.1:$NGINX_PORT/health" "${LUA[@]}"
R[nginx]="$(wrk_run "health-nginx-c64" 64 "http://127.0.0.1:$NGINX_PORT/health" "${LUA[@]}")"
warm "http://127.0.0.1:$NGINX_PORT2/health" "${LUA[@]}"
R[nginx-ctr]="$(wrk_run "health-nginx-ctr-c64" 64 "http://127.0.0.1:$NGINX_PORT2/health" "${LUA[@]}")"
R[gwself]="$(wrk_run "gateway-own-health-c64" 64 "http://$GATEWAY_ADDR/health" "${LUA[@]}")"

echo "gateway execute: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/gateway-machine.txt" >&2
BENCH_WRK_BODY="$EXEC_BODY"
warm "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" "${LUA[@]}" "${KEY[@]}"
R[exec-gw]="$(wrk_run "exec-gateway-c64" 64 "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" "${LUA[@]}" "${KEY[@]}")"
BENCH_WRK_BODY="$DIRECT_BODY"
warm "http://127.0.0.1:$NGINX_PORT/execute/echo" "${LUA[@]}"
R[exec-nginx]="$(wrk_run "exec-nginx2-c64" 64 "http://127.0.0.1:$NGINX_PORT/execute/echo" "${LUA[@]}")"
warm "http://127.0.0.1:$NGINX_PORT2/execute/echo" "${LUA[@]}"
R[exec-nginx-ctr]="$(wrk_run "exec-nginx2-ctr-c64" 64 "http://127.0.0.1:$NGINX_PORT2/execute/echo" "${LUA[@]}")"

# The criterion bench, after the daemon and nginx are gone (it wants the CPU to itself).
cleanup_all
KC=""
if [[ "${BENCH_SKIP_KEYCHECK:-0}" != 1 ]]; then
    echo "keycheck: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/gateway-machine.txt" >&2
    { echo "\$ cargo bench --bench keycheck"; cargo bench --bench keycheck 2>&1 | grep -v '^\s*Compiling\|^\s*Finished\|^\s*Running\|^\s*Blocking'; } | tee "$BENCH_OUT/keycheck.txt" >&2
    KC="$(awk '/^key check \+ rate limit/ { if ($0 !~ /time:/) getline; sub(/.*time: */, ""); print; exit }' "$BENCH_OUT/keycheck.txt")"
fi

f() { jq -r ".$2" <<<"$1"; }
{
    echo "Issue 4, gateway vs nginx (wrk 64 connections, ${WRK_DURATION}s per row; latency in µs):"
    printf '%-48s %10s %8s %8s %8s\n' path req/s p50 p99 non2xx
    for k in direct gw nginx nginx-ctr gwself exec-gw exec-nginx exec-nginx-ctr; do
        case $k in
            direct) n="GET /health straight to the container";; gw) n="GET /gw/bench-echo/health + key";;
            nginx) n="GET /health through nginx (→ host port)";; nginx-ctr) n="GET /health through nginx (→ container)";;
            gwself) n="GET /health of the gateway itself";;
            exec-gw) n="POST execute through the gateway";; exec-nginx) n="POST /execute/echo through nginx (→ host port)";;
            exec-nginx-ctr) n="POST /execute/echo through nginx (→ container)";;
        esac
        j="${R[$k]}"
        printf '%-48s %10.0f %8s %8s %8s\n' "$n" "$(f "$j" rps)" "$(f "$j" p50_us)" "$(f "$j" p99_us)" "$(( $(f "$j" non_2xx) + $(f "$j" socket_errors) ))"
    done
    pct() { jq -rn "$1 as \$a | $2 as \$n | \$a.rps / \$n.rps * 100 | round"; }
    echo "passthrough/nginx req/s: $(pct "${R[gw]}" "${R[nginx]}")% (nginx → host port), $(pct "${R[gw]}" "${R[nginx-ctr]}")% (nginx → container) (goal ≥ 100%)"
    echo "execute/nginx req/s:     $(pct "${R[exec-gw]}" "${R[exec-nginx]}")% (nginx → host port), $(pct "${R[exec-gw]}" "${R[exec-nginx-ctr]}")% (nginx → container) (goal ≥ 100%)"
    if [[ -n "$KC" ]]; then echo "key check + rate limit (criterion, 1000 grants): time $KC (goal < 5 µs)"; fi
} | tee "$BENCH_OUT/gateway.txt"

#!/usr/bin/env bash
# Issue 16, the ceiling of a WASM action: the gateway's own empty `/health` (no key, no body,
# the same hyper server and worker threads) beside nginx's static body and the WASM echo
# action, wrk side by side, at c=1 and c=64, BENCH_ROUNDS (2) rounds of BENCH_WRK_DURATION
# (5) s per row. Prints one line per round and connection count with the ratios.
# Uses the release binaries (or ADDOND_BIN/ADDONCTL_BIN), the ports and networks of
# bench/addons-execute.sh; removes what it made.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"
ensure_tools2
command -v clang >/dev/null && command -v wasm-ld >/dev/null || die "clang and lld are needed (apt-get install clang lld)"
pin_binaries
trap cleanup_all EXIT
secs="${BENCH_WRK_DURATION:-5}"
start_bench2_daemon
start_nginx static 0 127.0.0.1:0
MODS="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-wasm.XXXXXX")"
WASM_ECHO_OUT="$MODS/0" bash examples/wasm-echo/build.sh >/dev/null
sed -e 's/^name = "wasm-echo"/name = "bench-wasm"/' examples/wasm-echo/addon.toml >"$MODS/addon.toml"
ctl "$DATA" addons register "$MODS/addon.toml" >/dev/null
ctl "$DATA" addons install bench-wasm >/dev/null
ctl "$DATA" addons publish bench-wasm "$MODS/0/wasm-echo.wasm" >/dev/null
KEY="$(grant_key bench-wasm)"
URL="http://$GATEWAY_ADDR/api/addons/bench-wasm/execute"
rps() { wrk "$@" | grep '^{"label"' | jq .rps; }
for round in $(seq "${BENCH_ROUNDS:-2}"); do
    for c in 1 64; do
        t=$([[ $c == 1 ]] && echo 1 || echo 2)
        echo "round $round c=$c: machine $(wait_turn)% busy before" >&2
        export BENCH_WRK_PATH="" BENCH_WRK_BODY=""
        h=$(rps -t"$t" -c"$c" -d"${secs}s" -s "$BENCH_DIR/addons-wrk.lua" "http://$GATEWAY_ADDR/health")
        export BENCH_WRK_BODY="$EXEC_BODY"
        n=$(rps -t"$t" -c"$c" -d"${secs}s" -s "$BENCH_DIR/addons-wrk.lua" "http://127.0.0.1:$NGINX_PORT/")
        w=$(rps -t"$t" -c"$c" -d"${secs}s" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $KEY" "$URL")
        echo "round $round c=$c: gateway /health $h, nginx static $n, wasm execute $w;" \
            "health/nginx $(jq -n "$h/$n*100|round")%, wasm/nginx $(jq -n "$w/$n*100|round")%, wasm/health $(jq -n "$w/$h*100|round")%"
    done
done
rm -rf "$MODS"

#!/usr/bin/env bash
# Issue 16 (WebAssembly addons): the same trivial action as a WASM addon and as a container
# addon, through the gateway, beside nginx answering a static body (the floor for an HTTP
# answer here); then publish -> first new answer; then instantiate+call inside the daemon.
#
#   1. wrk at c=1 and c=64, POST /api/addons/NAME/execute {"action":"echo",...} with a key:
#      wasm       examples/wasm-echo (C, clang --target=wasm32) as addon bench-wasm
#      container  the sample image as addon bench-echo (bench/addons-lib.sh's setup_echo)
#      nginx      a static 200 with the same envelope (bench/nginx/static.conf)
#   2. publish -> first answer from the new code (bench/wasm-publish.py), p50/p99:
#      precompiled  two modules published in turn (the second time on, from the cache)
#      compiling    every round a module never seen (a new -DTAG), so every publish compiles
#   3. instantiate+call p50/p99 inside the runtime (a release build of the unit test
#      wasm::tests::instantiate_and_call_timing).
#
# Goals (issue 16): wasm >= 3x container req/s and >= 0.8x nginx; instantiate+call p50
# <= 10 us; publish -> first new answer p99 <= 10 ms precompiled, <= 100 ms compiling.
# Same ports, networks and clean-up as bench/addons-execute.sh. Results: $BENCH_OUT/wasm-*.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

WARMUP="${BENCH_WRK_WARMUP:-2}"
ROUNDS="${BENCH_PUBLISH_ROUNDS:-50}"
ensure_tools2
command -v clang >/dev/null && command -v wasm-ld >/dev/null || die "clang and lld are needed (apt-get install clang lld)"
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT

machine_info | tee "$BENCH_OUT/wasm-machine.txt" >&2
WRK_GROUP=wasm; : >"$BENCH_OUT/wrk-summary-$WRK_GROUP.jsonl"
setup_echo
stop_nginx
start_nginx static 0 127.0.0.1:0

MODS="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-wasm.XXXXXX")"
for tag in $(seq 0 $((ROUNDS + 1))); do
    WASM_ECHO_OUT="$MODS/$tag" WASM_ECHO_CFLAGS="-DTAG=$tag" bash examples/wasm-echo/build.sh >/dev/null
    mv "$MODS/$tag/wasm-echo.wasm" "$MODS/echo-$tag.wasm"
done
WASM_ADDON=bench-wasm
sed -e 's/^name = "wasm-echo"/name = "bench-wasm"/' examples/wasm-echo/addon.toml >"$MODS/addon.toml"
ctl "$DATA" addons register "$MODS/addon.toml" >/dev/null
ctl "$DATA" addons install "$WASM_ADDON" >/dev/null
ctl "$DATA" addons publish "$WASM_ADDON" "$MODS/echo-0.wasm" >/dev/null
WASM_KEY="$(grant_key "$WASM_ADDON")"
via_wasm="$(curl -sS --fail-with-body -H "apikey: $WASM_KEY" -H 'content-type: application/json' -d "$EXEC_BODY" "http://$GATEWAY_ADDR/api/addons/$WASM_ADDON/execute")"
via_ctr="$(curl -sS --fail-with-body -H "apikey: $API_KEY" -H 'content-type: application/json' -d "$EXEC_BODY" "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute")"
static="$(curl -sS --fail-with-body -d "$EXEC_BODY" "http://127.0.0.1:$NGINX_PORT/")"
say "wasm      → $via_wasm"
say "container → $via_ctr"
say "nginx     → $static"
[[ "$(jq -cS .data <<<"$via_wasm")" == "$(jq -cS .data.echo <<<"$via_ctr")" ]] || die "wasm and container answer differently"

warm() { wrk -t"$([[ $2 -lt 2 ]] && echo 1 || echo 2)" -c"$2" -d"${WARMUP}s" "${@:3}" "$1" >/dev/null 2>&1 || true; }
export BENCH_WRK_BODY="$EXEC_BODY" BENCH_WRK_PATH=""
declare -A R
for conns in 1 64; do
    echo "wasm c=$conns: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/wasm-machine.txt" >&2
    warm "http://$GATEWAY_ADDR/api/addons/$WASM_ADDON/execute" "$conns" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $WASM_KEY"
    R[wasm-$conns]="$(wrk_run "wasm-exec-c$conns" "$conns" "http://$GATEWAY_ADDR/api/addons/$WASM_ADDON/execute" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $WASM_KEY")"
    warm "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" "$conns" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY"
    R[container-$conns]="$(wrk_run "wasm-container-c$conns" "$conns" "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY")"
    warm "http://127.0.0.1:$NGINX_PORT/" "$conns" -s "$BENCH_DIR/addons-wrk.lua"
    R[nginx-$conns]="$(wrk_run "wasm-nginx-static-c$conns" "$conns" "http://127.0.0.1:$NGINX_PORT/" -s "$BENCH_DIR/addons-wrk.lua")"
done

say "publish -> first new answer, precompiled (two modules in turn)"
python3 "$BENCH_DIR/wasm-publish.py" "$DATA/addond.sock" "$GATEWAY_ADDR" "$WASM_KEY" "$WASM_ADDON" 2 "$MODS/echo-0.wasm" "$MODS/echo-1.wasm" >/dev/null
PRE="$(python3 "$BENCH_DIR/wasm-publish.py" "$DATA/addond.sock" "$GATEWAY_ADDR" "$WASM_KEY" "$WASM_ADDON" "$ROUNDS" "$MODS/echo-0.wasm" "$MODS/echo-1.wasm")"
say "publish -> first new answer, compiling (a new module every round)"
FRESH=()
for tag in $(seq 2 $((ROUNDS + 1))); do FRESH+=("$MODS/echo-$tag.wasm"); done
COMP="$(python3 "$BENCH_DIR/wasm-publish.py" "$DATA/addond.sock" "$GATEWAY_ADDR" "$WASM_KEY" "$WASM_ADDON" "$ROUNDS" "${FRESH[@]}")"

CALL=""
if [[ "${BENCH_SKIP_UNIT:-0}" != 1 ]]; then # BENCH_SKIP_UNIT=1: no release build of the unit tests
    say "instantiate+call inside the runtime (release unit test)"
    CALL="$(cargo test --release --lib wasm::tests::instantiate_and_call_timing -- --nocapture 2>&1 | grep 'wasm instantiate+call' || true)"
fi

{
    echo "# WebAssembly addons — $(date -u +%FT%TZ)"
    printf '%-10s %6s %12s %10s %10s\n' path conns req/s p50_us p99_us
    for conns in 1 64; do
        for p in wasm container nginx; do
            jq -r --arg p "$p" --arg c "$conns" '[$p, $c, (.rps|floor), .p50_us, .p99_us] | @tsv' <<<"${R[$p-$conns]}" \
                | awk '{ printf "%-10s %6s %12s %10s %10s\n", $1, $2, $3, $4, $5 }'
        done
    done
    for conns in 1 64; do
        w="$(jq .rps <<<"${R[wasm-$conns]}")"; c="$(jq .rps <<<"${R[container-$conns]}")"; n="$(jq .rps <<<"${R[nginx-$conns]}")"
        echo "c=$conns: wasm/container $(jq -n "$w/$c*100|floor/100") x, wasm/nginx $(jq -n "$w/$n*100|floor/100") x"
    done
    echo "publish -> first new answer, precompiled: $PRE"
    echo "publish -> first new answer, compiling:   $COMP"
    echo "${CALL:-instantiate+call: (the release unit test did not run)}"
} | tee "$BENCH_OUT/wasm-summary.txt"
rm -rf "$MODS"

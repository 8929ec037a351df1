#!/usr/bin/env bash
# Issue 15 (MCP): the cost of an MCP tools/call against a plain gateway execute of the same
# action, side by side in one run, on the same daemon, addon and key:
#
#   execute   POST /api/addons/bench-echo/execute   {"action":"echo","data":{…}}
#   mcp       POST /mcp  JSON-RPC tools/call of `bench-echo.echo` with the same data, in the
#             stateless 2026-07-28 revision (MCP-Protocol-Version header and the request's
#             _meta, no session), answered as JSON
#
# wrk (bench/addons-wrk.lua) at 1 and 64 connections, the two paths alternating, each pair
# BENCH_MCP_RUNS times (default 3). Goal (issue 15): an MCP call costs at most 1.5× a plain
# execute (req/s ratio ≥ 0.67, p50 ratio ≤ 1.5).
#
# Uses the release binaries (BENCH_SKIP_BUILD=1 to not build), the daemon and addon of
# bench/addons-lib.sh (gateway 127.0.0.1:7180, ports 8800–8899); removes what it made.
# Results: $BENCH_OUT (bench/results)/mcp.txt, wrk-mcp-*.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

RUNS="${BENCH_MCP_RUNS:-3}"
WARMUP="${BENCH_WRK_WARMUP:-2}"
ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT

machine_info | tee "$BENCH_OUT/mcp-machine.txt" >&2
WRK_GROUP=mcp; : >"$BENCH_OUT/wrk-summary-$WRK_GROUP.jsonl"
start_bench2_daemon
install_addon "$ECHO_ADDON" "$ECHO_MANIFEST" >/dev/null
API_KEY="$(grant_key "$ECHO_ADDON")"

PROTO=2026-07-28
MCP_BODY='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"bench-echo.echo","arguments":{"order":7,"items":["a","b"],"note":"bench"},"_meta":{"io.modelcontextprotocol/protocolVersion":"'$PROTO'","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}}}'
MCP_HEADERS=(-H "Authorization: Bearer $API_KEY" -H "Accept: application/json, text/event-stream" -H "MCP-Protocol-Version: $PROTO" -H "Mcp-Method: tools/call" -H "Mcp-Name: bench-echo.echo")
EXEC_URL="http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute"
MCP_URL="http://$GATEWAY_ADDR/mcp"

# Both answer the same action's result before anything is measured.
via_exec="$(curl -sS --fail-with-body -H "apikey: $API_KEY" -H 'content-type: application/json' -d "$EXEC_BODY" "$EXEC_URL")"
via_mcp="$(curl -sS --fail-with-body "${MCP_HEADERS[@]}" -H 'content-type: application/json' -d "$MCP_BODY" "$MCP_URL")"
say "execute → $via_exec"
say "mcp     → $via_mcp"
[[ "$(jq -cS .data <<<"$via_exec")" == "$(jq -cS .result.structuredContent <<<"$via_mcp")" ]] || die "execute and tools/call do not answer the same"
[[ "$(jq -r '.result.isError // false' <<<"$via_mcp")" == false ]] || die "tools/call answered a tool error"

warm() { wrk -t"$([[ $2 -lt 2 ]] && echo 1 || echo 2)" -c"$2" -d"${WARMUP}s" "${@:3}" "$1" >/dev/null 2>&1 || true; }
run_exec() { BENCH_WRK_BODY="$EXEC_BODY" wrk_run "mcp-execute-c$1-r$2" "$1" "$EXEC_URL" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY"; }
run_mcp() { BENCH_WRK_BODY="$MCP_BODY" wrk_run "mcp-toolscall-c$1-r$2" "$1" "$MCP_URL" -s "$BENCH_DIR/addons-wrk.lua" "${MCP_HEADERS[@]}"; }

export BENCH_WRK_BODY BENCH_WRK_PATH=""
declare -A R
for conns in 1 64; do
    echo "mcp c=$conns: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/mcp-machine.txt" >&2
    BENCH_WRK_BODY="$EXEC_BODY" warm "$EXEC_URL" "$conns" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $API_KEY"
    BENCH_WRK_BODY="$MCP_BODY" warm "$MCP_URL" "$conns" -s "$BENCH_DIR/addons-wrk.lua" "${MCP_HEADERS[@]}"
    for ((r = 1; r <= RUNS; r++)); do
        R[execute-$conns-$r]="$(run_exec "$conns" "$r")"
        R[mcp-$conns-$r]="$(run_mcp "$conns" "$r")"
    done
done

f() { jq -r ".$2" <<<"$1"; }
{
    echo "Issue 15, tools/call vs execute of the same action (wrk ${WRK_DURATION}s per row, $RUNS runs alternating; latency in µs):"
    printf '%-9s %5s %4s %10s %8s %8s %8s %8s\n' path conns run req/s p50 p90 p99 non2xx
    for conns in 1 64; do
        for ((r = 1; r <= RUNS; r++)); do
            for t in execute mcp; do
                j="${R[$t-$conns-$r]}"
                printf '%-9s %5s %4s %10.0f %8s %8s %8s %8s\n' "$t" "$conns" "$r" "$(f "$j" rps)" "$(f "$j" p50_us)" "$(f "$j" p90_us)" "$(f "$j" p99_us)" "$(( $(f "$j" non_2xx) + $(f "$j" socket_errors) ))"
            done
        done
    done
    for conns in 1 64; do
        e="$(for ((r = 1; r <= RUNS; r++)); do echo "${R[execute-$conns-$r]}"; done | jq -s '{rps: (map(.rps) | add / length), p50: (map(.p50_us) | sort | .[length / 2 | floor]), p99: (map(.p99_us) | sort | .[length / 2 | floor])}')"
        m="$(for ((r = 1; r <= RUNS; r++)); do echo "${R[mcp-$conns-$r]}"; done | jq -s '{rps: (map(.rps) | add / length), p50: (map(.p50_us) | sort | .[length / 2 | floor]), p99: (map(.p99_us) | sort | .[length / 2 | floor])}')"
        jq -rn --argjson e "$e" --argjson m "$m" --arg c "$conns" \
            '"c=\($c): execute \($e.rps | round) req/s p50 \($e.p50) µs p99 \($e.p99) µs; tools/call \($m.rps | round) req/s p50 \($m.p50) µs p99 \($m.p99) µs; cost (execute req/s ÷ tools/call req/s) \($e.rps / $m.rps * 100 | round / 100)×, p50 \($m.p50 / $e.p50 * 100 | round / 100)× (goal ≤ 1.5×)"'
    done
} | tee "$BENCH_OUT/mcp.txt"

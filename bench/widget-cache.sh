#!/usr/bin/env bash
# Issue 19, the widget cache restated, side by side in one run through the gateway:
#   (a) warm renders of bench-echo's `checkout` (a render that costs almost nothing) against
#       the gateway's own empty `GET /health`: goal warm ≥ 0.9× /health req/s, i.e. a cache
#       hit costs about nothing beyond HTTP;
#   (b) bench-heavy, the same sample image with SAMPLE_RENDER_CPU_US (1000 by default) so
#       every render burns ≥ 1 ms of CPU: warm (same config and context) against uncached
#       (a new `context` per request): goal warm ≥ 20× uncached.
# Each pair is measured BENCH_ROUNDS (3) times, alternating, 64 connections (BENCH_CONNS).
# Uses the release binaries (BENCH_SKIP_BUILD=1 to not build) and what bench/addons-lib.sh
# uses (ports 8800–8899, gateway 127.0.0.1:7180). Results: $BENCH_OUT/widget-cache.txt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

ROUNDS="${BENCH_ROUNDS:-3}"
CONNS="${BENCH_CONNS:-64}"
RENDER_US="${BENCH_RENDER_CPU_US:-1000}"
ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT
machine_info | tee "$BENCH_OUT/widget-cache-machine.txt" >&2
WRK_GROUP=widget-cache; : >"$BENCH_OUT/wrk-summary-$WRK_GROUP.jsonl"

start_bench2_daemon
install_addon "$ECHO_ADDON" "$ECHO_MANIFEST" >/dev/null
HEAVY_MANIFEST="$(jq -c --arg us "$RENDER_US" '.name = "bench-heavy" | .services[0].environment.SAMPLE_RENDER_CPU_US = $us' <<<"$ECHO_MANIFEST")"
install_addon bench-heavy "$HEAVY_MANIFEST" >/dev/null
api POST /api/applications '{"name": "bench-widgets"}' >/dev/null
KEY="$(api POST /api/application-grants '{"application": "bench-widgets", "addon": "bench-echo"}' | jq -er '.data.api_key')"
HEAVY_KEY="$(api POST /api/application-grants '{"application": "bench-widgets", "addon": "bench-heavy"}' | jq -er '.data.api_key')"

enc() { jq -rn --arg v "$1" '$v | @uri'; }
warm_q="config=$(enc '{"title":"Pay now"}')&context=$(enc '{"cart":"c-1","user":"bench"}')"
miss_q="config=$(enc '{"title":"Pay now"}')&context=$(enc '{"cart":"c-1","user":"')"'{N}'"$(enc '"}')"
HEALTH_URL="http://$GATEWAY_ADDR/health"
ECHO_URL="http://$GATEWAY_ADDR/api/widgets/$ECHO_ADDON/checkout"
HEAVY_URL="http://$GATEWAY_ADDR/api/widgets/bench-heavy/checkout"
for u in "$ECHO_URL?$warm_q" "$HEAVY_URL?$warm_q"; do
    k="$KEY"; [[ "$u" == "$HEAVY_URL"* ]] && k="$HEAVY_KEY"
    curl -sS --fail-with-body -o /dev/null -H "apikey: $k" "$u" || die "a widget render failed: $u"
done
# The heavy render really costs what it says: time one uncached render.
t="$(curl -sS -o /dev/null -w '%{time_total}' -H "apikey: $HEAVY_KEY" "$HEAVY_URL?config=%7B%7D&context=%7B%22probe%22%3A1%7D")"
say "one uncached heavy render: ${t}s (SAMPLE_RENDER_CPU_US=$RENDER_US)"

cache_counts() { api GET /metrics | awk '/^addond_widget_cache_hits_total/ { h = $2 } /^addond_widget_cache_misses_total/ { m = $2 } END { print h + 0, m + 0 }'; }
run() { # run LABEL URL KEY [PATH-TEMPLATE]
    local label="$1" url="$2" key="$3"
    BENCH_WRK_PATH="${4:-}"; export BENCH_WRK_PATH BENCH_WRK_BODY=""
    wrk -t2 -c"$CONNS" -d2s -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $key" "$url" >/dev/null 2>&1 || true
    local h0 m0 h1 m1 j
    read -r h0 m0 < <(cache_counts)
    j="$(wrk_run "$label" "$CONNS" "$url" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: $key")"
    read -r h1 m1 < <(cache_counts)
    jq -c --argjson h "$((h1 - h0))" --argjson m "$((m1 - m0))" '. + {cache_hits: $h, cache_misses: $m}' <<<"$j"
}
declare -a A B
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/widget-cache-machine.txt" >&2
    A+=("$(run "health-r$r" "$HEALTH_URL" "$KEY")" "$(run "echo-warm-r$r" "$ECHO_URL?$warm_q" "$KEY")")
    B+=("$(run "heavy-warm-r$r" "$HEAVY_URL?$warm_q" "$HEAVY_KEY")" "$(run "heavy-uncached-r$r" "$HEAVY_URL" "$HEAVY_KEY" "/api/widgets/bench-heavy/checkout?$miss_q")")
done

f() { jq -r ".$2" <<<"$1"; }
ratio() { jq -rn "$1 as \$a | $2 as \$b | (\$a.rps / \$b.rps * 100 | round) / 100"; }
{
    echo "Widget cache through the gateway, $CONNS connections, wrk ${WRK_DURATION}s per row, $ROUNDS rounds:"
    printf '%-22s %10s %8s %8s %8s %10s %10s\n' row req/s p50 p99 non2xx hits misses
    for j in "${A[@]}" "${B[@]}"; do
        printf '%-22s %10.0f %8s %8s %8s %10s %10s\n' "$(f "$j" label)" "$(f "$j" rps)" "$(f "$j" p50_us)" "$(f "$j" p99_us)" "$(( $(f "$j" non_2xx) + $(f "$j" socket_errors) ))" "$(f "$j" cache_hits)" "$(f "$j" cache_misses)"
    done
    for r in $(seq 0 $((ROUNDS - 1))); do
        echo "round $((r + 1)): (a) warm / health = $(ratio "${A[$((2 * r + 1))]}" "${A[$((2 * r))]}")× (goal ≥ 0.9×); (b) heavy warm / uncached = $(ratio "${B[$((2 * r))]}" "${B[$((2 * r + 1))]}")× (goal ≥ 20×)"
    done
} | tee "$BENCH_OUT/widget-cache.txt"

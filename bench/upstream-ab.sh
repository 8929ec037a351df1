#!/usr/bin/env bash
# Issue 19: the hand-written upstream client (src/upstream.rs, "own") against hyper's
# client::conn::http1 (src/upstream/hyper_client.rs, ADDOND_UPSTREAM_CLIENT=hyper), A/B in
# one run.
#
# Two daemons from the same release binary run side by side, A with the hand-written client
# and B with hyper's, each with its own data dir, gateway (127.0.0.1:7190 and :7191), port
# range (8700–8749 and 8750–8799) and its own bench-echo addon (the sample image, as in
# bench/addons-lib.sh). Every cell is measured A, B, A, B… (BENCH_ROUNDS rounds), each run
# by bench/cpu-per-request.sh: wrk's req/s and latency, and the daemon's user+system CPU per
# request from /proc. Cells, at 1 and 64 connections:
#   execute   POST /api/addons/bench-echo/execute with a key (upstream::request: the body
#             POSTed whole, the answer collected)
#   gw-get    GET /gw/bench-echo/health with a key (upstream::connect + send, streamed back)
#   gw-post   POST /gw/bench-echo/execute/echo with a key (the request body streamed too)
# The rule (issue 19): hyper within 5% of the hand-written client in req/s AND in CPU per
# request → switch to it; else keep the hand-written one, with the figures written down.
#
# Uses the release binaries (copied first, so a rebuild meanwhile does not change them):
# BENCH_SKIP_BUILD=1 to not build. Collides neither with bench/addons-execute.sh,
# bench/wasm.sh (7180–7183, 8800–8899) nor with the tests. Removes every container,
# network, data dir and process it started, also when interrupted.
#   BENCH_ROUNDS (3)          rounds per cell (each round: one A run, one B run)
#   BENCH_WRK_DURATION (10)   seconds per measured run; BENCH_WRK_WARMUP (2) unrecorded warm-up
#   BENCH_QUIET_WAIT (60)     seconds to wait for a quiet machine before each cell
# Results: $BENCH_OUT (bench/results)/upstream-ab*.txt, .jsonl
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

# Our own names, so that cleanup_all (addons-lib.sh) never touches the other benchmarks'.
BENCH2_NETWORK="addond_bench3"
BENCH2_ISOLATED="addond_bench3_iso"
ROUNDS="${BENCH_ROUNDS:-3}"
WARMUP="${BENCH_WRK_WARMUP:-2}"
QUIET="${BENCH_QUIET_WAIT:-60}"
declare -A GW=([A]="127.0.0.1:7190" [B]="127.0.0.1:7191")
declare -A PORTS=([A]="8700 8749" [B]="8750 8799")
declare -A CLIENT=([A]="own" [B]="hyper")
declare -A DIRS PIDS IDS KEYS ANS

ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries

cleanup_ab() {
    local side
    for side in A B; do
        [[ -n "${DIRS[$side]:-}" ]] || continue
        DATA="${DIRS[$side]}" DAEMON_ID="${IDS[$side]:-}"
        cleanup_all
        # A daemon that did not answer on its socket any more is stopped here.
        if [[ -n "${PIDS[$side]:-}" ]] && kill -0 "${PIDS[$side]}" 2>/dev/null; then
            kill -TERM "${PIDS[$side]}" 2>/dev/null || true
        fi
        DIRS[$side]=""
    done
}
trap cleanup_ab EXIT

# The config of daemon $1 (A or B) in data dir $2.
write_config_ab() {
    local side="$1" dir="$2" lo hi
    read -r lo hi <<<"${PORTS[$side]}"
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
[daemon]
data_dir = "$dir/data"
socket_path = "$dir/addond.sock"
log_level = "info"

[ports]
range_start = $lo
range_end = $hi

[docker]
network = "$BENCH2_NETWORK"
isolated_network = "$BENCH2_ISOLATED"

[gateway]
listen = "${GW[$side]}"

[addon_api]
port = 0
EOF
}

# Starts daemon $1 with its client, installs bench-echo, grants a key.
start_side() {
    local side="$1"
    DATA="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench3-$side.XXXXXX")"
    DIRS[$side]="$DATA"
    write_config_ab "$side" "$DATA"
    "$ADDOND" --config "$DATA/config.toml" check-config >/dev/null || die "config rejected: $DATA/config.toml"
    if [[ ${CLIENT[$side]} == hyper ]]; then
        PIDS[$side]="$(ADDOND_UPSTREAM_CLIENT=hyper start_daemon "$DATA")"
    else
        PIDS[$side]="$(start_daemon "$DATA")"
    fi
    DAEMON_ID=""
    install_addon "$ECHO_ADDON" "$ECHO_MANIFEST" >/dev/null
    IDS[$side]="$DAEMON_ID"
    KEYS[$side]="$(grant_key "$ECHO_ADDON")"
    # The daemon logs the client it read from ADDOND_UPSTREAM_CLIENT (Own or Hyper).
    local logged
    logged="$(grep 'upstream client' "$DATA/addond.log" | head -1 || true)"
    grep -q "client=${CLIENT[$side]^}" <<<"$logged" || die "daemon $side does not say it uses the ${CLIENT[$side]} client: ${logged:-nothing logged}"
    say "daemon $side (${CLIENT[$side]} client): pid ${PIDS[$side]}, gateway ${GW[$side]}, data $DATA"
}

unset ADDOND_UPSTREAM_CLIENT
start_side A
start_side B

EXEC_PATH="/api/addons/$ECHO_ADDON/execute"
GET_PATH="/gw/$ECHO_ADDON/health"
POST_PATH="/gw/$ECHO_ADDON/execute/echo"
# Both daemons answer every path, and the same.
for side in A B; do
    got_exec="$(curl -sS --fail-with-body -H "apikey: ${KEYS[$side]}" -H 'content-type: application/json' -d "$EXEC_BODY" "http://${GW[$side]}$EXEC_PATH" | jq -cS .data)"
    got_post="$(curl -sS --fail-with-body -H "apikey: ${KEYS[$side]}" -H 'content-type: application/json' -d "$DIRECT_BODY" "http://${GW[$side]}$POST_PATH" | jq -cS .)"
    got_get="$(curl -sS --fail-with-body -H "apikey: ${KEYS[$side]}" "http://${GW[$side]}$GET_PATH" | jq -c 'del(.uptime_ms)')"
    say "$side: execute → $got_exec; gw POST → $got_post; gw GET → $got_get"
    [[ "$got_exec" == "$got_post" ]] || die "$side: execute and the passthrough POST answer differently"
    # The answers name the instance that answered; each daemon has its own.
    ANS[$side]="$(jq -cS 'del(.instance)' <<<"$got_exec") $(jq -cS 'del(.instance)' <<<"$got_get")"
done
[[ "${ANS[A]}" == "${ANS[B]}" ]] || die "the daemons answer differently: ${ANS[A]} vs ${ANS[B]}"

OUT="$BENCH_OUT/upstream-ab.jsonl"
: >"$OUT"
{
    machine_info
    echo "gateway.workers: default; daemon A pid ${PIDS[A]} (own), B pid ${PIDS[B]} (hyper)"
} | tee "$BENCH_OUT/upstream-ab-machine.txt" >&2

# One measured run: cell, connections, side, round.
run() {
    local cell="$1" conns="$2" side="$3" round="$4" url body=""
    case $cell in
        execute) url="http://${GW[$side]}$EXEC_PATH"; body="$EXEC_BODY" ;;
        gw-get) url="http://${GW[$side]}$GET_PATH" ;;
        gw-post) url="http://${GW[$side]}$POST_PATH"; body="$DIRECT_BODY" ;;
    esac
    export BENCH_WRK_BODY="$body" BENCH_WRK_PATH=""
    local threads=2
    ((conns < 2)) && threads=1
    wrk -t"$threads" -c"$conns" -d"${WARMUP}s" -s "$BENCH_DIR/addons-wrk.lua" -H "apikey: ${KEYS[$side]}" "$url" >/dev/null 2>&1 || true
    local load out json cpu user sys
    load="$(cut -d' ' -f1 /proc/loadavg)"
    out="$(bash "$BENCH_DIR/cpu-per-request.sh" "${PIDS[$side]}" "$conns" "$WRK_DURATION" "$url" -H "apikey: ${KEYS[$side]}")"
    json="$(head -1 <<<"$out")"
    cpu="$(tail -1 <<<"$out")"
    user="$(sed -E 's/^user ([0-9]+) .*/\1/' <<<"$cpu")"
    sys="$(sed -E 's/.*system ([0-9]+) .*/\1/' <<<"$cpu")"
    json="$(jq -c --arg cell "$cell" --argjson c "$conns" --arg side "$side" --arg client "${CLIENT[$side]}" --argjson round "$round" \
        --argjson user "$user" --argjson sys "$sys" --argjson load "$load" \
        '. + {cell: $cell, conns: $c, side: $side, client: $client, round: $round, cpu_user_us: $user, cpu_sys_us: $sys, cpu_us: ($user + $sys), load1: $load}' <<<"$json")"
    echo "$json" >>"$OUT"
    say "$(jq -r '"\(.cell) c=\(.conns) round \(.round) \(.client): \(.rps | round) req/s, p50 \(.p50_us) µs, p99 \(.p99_us) µs, CPU \(.cpu_us) µs/req (load \(.load1)), errors \(.socket_errors + .non_2xx)"' <<<"$json")"
}

for cell in execute gw-get gw-post; do
    for conns in 1 64; do
        echo "$cell c=$conns: machine $(wait_turn "$QUIET")% busy, load $(cut -d' ' -f1-3 /proc/loadavg) before" | tee -a "$BENCH_OUT/upstream-ab-machine.txt" >&2
        for round in $(seq "$ROUNDS"); do
            # Which side goes first alternates too, so neither always runs on the warmer machine.
            if ((round % 2)); then order="A B"; else order="B A"; fi
            for side in $order; do run "$cell" "$conns" "$side" "$round"; done
        done
    done
done

{
    echo "Issue 19, upstream client A/B (wrk ${WRK_DURATION}s per run, ${ROUNDS} rounds; latency and CPU in µs; CPU = the daemon's user+system per request)"
    printf '%-8s %5s %5s %-6s %9s %7s %7s %8s %6s %6s\n' cell conns round client req/s p50 p99 cpu/req load errors
    jq -r '[.cell, .conns, .round, .client, (.rps | round), .p50_us, .p99_us, .cpu_us, .load1, (.socket_errors + .non_2xx)] | @tsv' "$OUT" \
        | sort -t$'\t' -k1,1 -k2,2n -k3,3n -k4,4 | while IFS=$'\t' read -r a b c d e f g h i j; do
            printf '%-8s %5s %5s %-6s %9s %7s %7s %8s %6s %6s\n' "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j"
        done
    echo
    echo "Medians per cell (hyper / own):"
    jq -rs '
      def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      group_by([.cell, .conns]) | .[] |
      (map(select(.client == "own"))) as $a | (map(select(.client == "hyper"))) as $b |
      ($a | map(.rps) | median) as $ar | ($b | map(.rps) | median) as $br |
      ($a | map(.cpu_us) | median) as $ac | ($b | map(.cpu_us) | median) as $bc |
      ($a | map(.p50_us) | median) as $ap | ($b | map(.p50_us) | median) as $bp |
      ($a | map(.p99_us) | median) as $aq | ($b | map(.p99_us) | median) as $bq |
      "\(.[0].cell) c=\(.[0].conns): req/s own \($ar | round) hyper \($br | round) (\($br / $ar * 100 | round)%); p50 \($ap) / \($bp) µs; p99 \($aq) / \($bq) µs; CPU/req own \($ac) hyper \($bc) µs (\($bc / $ac * 100 | round)%)\(if ($br >= 0.95 * $ar and $bc <= 1.05 * $ac) then " — within 5%" else " — NOT within 5%" end)"
    ' "$OUT"
} | tee "$BENCH_OUT/upstream-ab.txt"

#!/usr/bin/env bash
# Issue 5 (events): durable emit throughput and emit → delivered latency, side by side with
# redis pub/sub (not durable) and redis streams with appendfsync always (durable).
#
#   1. throughput: bench/events-load.py emit — N keep-alive HTTP/1.1 connections over the
#      admin Unix socket (asyncio, 2 processes), POST /api/events back to back, 10 s at
#      N = 1, 64, 256. Every answer is a 201 after the event's transaction committed
#      (WAL, synchronous=FULL, group commit). Recorded: events/s, emit latency, the daemon's
#      CPU, and the block device's flush (fsync) requests from /proc/diskstats.
#   2. the client's own ceiling: the same client sending PUBLISH to redis-server.
#   3. send → SSE receipt: GET /api/events/stream followed by a separate process while
#      emitters send at a paced 1000 events/s, and while they send flat out (64 connections).
#   4. send → delivered to a subscriber addon (sample image, subscribes = ["bench.*"]): one
#      event at a time, POST /api/events then poll the addon's GET /events on its host port
#      until it shows (the sample keeps no arrival times, so this is the resolution: one poll
#      round trip plus a 0.2 ms sleep, printed).
#   5. redis: redis-benchmark PUBLISH (64 clients) and XADD with appendonly/appendfsync always;
#      publish → receive latency at 1000/s with a SUBSCRIBE connection (events-load.py).
#
# Goals (issue 5): ≥ 20 000 durable events/s; p99 emit → delivered < 10 ms.
# Same daemon setup and cleanup as bench/addons-execute.sh (bench/addons-lib.sh).
#   BENCH_EVENTS_SECONDS (10)  seconds per run
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/addons-lib.sh"
cd "$REPO"

SECS="${BENCH_EVENTS_SECONDS:-10}"
LOAD="$BENCH_DIR/events-load.py"
ensure_tools2
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 && -z "${ADDOND_BIN:-}" ]]; then
    say "cargo build --release --bins"
    cargo build --release --bins
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || bash scripts/build-sample-image.sh >/dev/null
pin_binaries
trap cleanup_all EXIT

machine_info | tee "$BENCH_OUT/events-machine.txt" >&2
start_bench2_daemon
SOCK="$DATA/addond.sock"
DEV="$(df "$DATA" | awk 'NR == 2 { print $1 }' | sed 's|/dev/||')"
flushes() { awk -v d="$DEV" '$3 == d { print $19 }' /proc/diskstats; }
last_id() { api GET /api/events/subscribers | jq -r '.data.last_event_id // 0'; }
RAW="$BENCH_OUT/events-raw.txt"
: >"$RAW"

# run LABEL CMD...: runs one measurement, keeps the command, its output and the daemon's
# CPU and disk flushes over it; prints the JSON line with those added.
run() {
    local label="$1"; shift
    local c0 f0 t0 json c1 f1 t1
    c0="$(proc_cpu_ticks "$DAEMON_PID")"; f0="$(flushes)"; t0="$(date +%s.%N)"
    json="$("$@" 2> >(tee -a "$RAW" >&2))"
    c1="$(proc_cpu_ticks "$DAEMON_PID")"; f1="$(flushes)"; t1="$(date +%s.%N)"
    json="$(jq -c --arg l "$label" --argjson cpu "$(awk -v a="$c0" -v b="$c1" -v s="$t0" -v e="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * (b - a) / hz / (e - s) }')" \
        --argjson fl "$((f1 - f0))" '. + {label: $l, daemon_cpu_pct: $cpu, disk_flushes: $fl}' <<<"$json")"
    { echo "\$ $*"; echo "$json"; echo; } >>"$RAW"
    echo "$json" >>"$BENCH_OUT/events-summary.jsonl"
    echo "$json"
}
: >"$BENCH_OUT/events-summary.jsonl"

echo "events throughput: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/events-machine.txt" >&2
# warm-up (connections, prepared statements, WAL file growth)
python3 "$LOAD" emit --socket "$SOCK" --conns 16 --seconds 2 >/dev/null 2>&1
declare -A E
for n in 1 64 256; do
    E[$n]="$(run "emit-c$n" python3 "$LOAD" emit --socket "$SOCK" --conns "$n" --procs 2 --seconds "$SECS")"
done
audit_rows="$(api GET '/api/audit?limit=5' | jq -r '[.data[] | "\(.method) \(.path) \(.status)"] | join("; ")')"
echo "newest audit rows after the emits: $audit_rows" | tee -a "$RAW" >&2

echo "events SSE latency: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/events-machine.txt" >&2
S_PACED="$(run "sse-paced-1000" python3 "$LOAD" emit --socket "$SOCK" --conns 16 --procs 1 --seconds "$SECS" --rate 1000 --sse --after "$(last_id)")"
S_FULL="$(run "sse-flat-out-c64" python3 "$LOAD" emit --socket "$SOCK" --conns 64 --procs 2 --seconds "$SECS" --sse --after "$(last_id)")"

# Subscriber addon: installed now, so it starts at the end of the log (not behind the
# throughput runs' events).
SUB_MANIFEST='{"name": "bench-sub", "version": "1.0.0", "image": "addond-sample:latest",
  "permissions": ["network.internet", "events.subscribe"],
  "events": {"subscribes": ["bench.*"]},
  "services": [{"name": "api", "replicas": 1, "environment": {"SAMPLE_QUIET": "1"},
    "resource_limits": {"memory": "128m", "cpu": "1"}}]}'
SUB_PORT="$(install_addon bench-sub "$SUB_MANIFEST")"
say "subscriber bench-sub on host port $SUB_PORT"
echo "events subscriber latency: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/events-machine.txt" >&2
SUBR="$(run "subscriber-serial" python3 "$LOAD" subscriber --socket "$SOCK" --port "$SUB_PORT" --count 300 --gap-ms 10)"
api GET /api/events/subscribers | jq -c '.data.subscribers' | tee -a "$RAW" >&2

# redis
payload="$(python3 -c 'import json,time; print(json.dumps({"t": time.time(), "c": 0, "i": 0, "pad": "x" * 64}, separators=(",", ":")))')"
: >"$BENCH_OUT/redis-publish.txt"
: >"$BENCH_OUT/redis-xadd-aof.txt"
start_redis none
echo "redis: machine $(wait_turn)% busy before" | tee -a "$BENCH_OUT/events-machine.txt" >&2
CEIL="$(run "client-ceiling-redis-publish-c64" python3 "$LOAD" emit --target redis --redis-port "$REDIS_PORT" --conns 64 --procs 2 --seconds "$SECS" --name bench.load)"
{
    echo "\$ redis-benchmark -p $REDIS_PORT -c 64 -n 500000 PUBLISH bench.load '<${#payload} bytes>'"
    redis-benchmark -p "$REDIS_PORT" -c 64 -n 500000 PUBLISH bench.load "$payload" 2>&1 | tr '\r' '\n' | grep -v '^PUBLISH.*rps=' | sed '/^$/d'
} | tee -a "$RAW" "$BENCH_OUT/redis-publish.txt" >&2
RLAT="$(run "redis-pubsub-latency-1000" python3 "$LOAD" redis-latency --redis-port "$REDIS_PORT" --rate 1000 --seconds "$SECS")"
stop_redis
start_redis aof-always
{
    echo "\$ redis-benchmark -p $REDIS_PORT -c 64 -n 200000 XADD bench.stream '*' data '<${#payload} bytes>'   # appendonly yes, appendfsync always"
    redis-benchmark -p "$REDIS_PORT" -c 64 -n 200000 XADD bench.stream '*' data "$payload" 2>&1 | tr '\r' '\n' | grep -v '^XADD.*rps=' | sed '/^$/d'
} | tee -a "$RAW" "$BENCH_OUT/redis-xadd-aof.txt" >&2
stop_redis

rb_rps() { grep -m1 'throughput summary' "$1" | awk '{print $3}'; }
rb_lat() { awk '/latency summary/ { getline; getline; print "p50 " $3 " ms, p99 " $5 " ms"; exit }' "$1"; }
g() { jq -r "$2" <<<"$1"; }
{
    echo "Issue 5, durable emits over the admin socket (events-load.py, ${SECS}s per row):"
    printf '%-6s %10s %10s %10s %10s %9s %12s\n' conns events/s p50_us p99_us errors daemon% flushes/evt
    for n in 1 64 256; do
        j="${E[$n]}"
        printf '%-6s %10s %10s %10s %10s %9s %12s\n' "$n" "$(g "$j" .events_per_s)" "$(g "$j" .emit.p50_us)" "$(g "$j" .emit.p99_us)" "$(g "$j" .errors)" "$(g "$j" .daemon_cpu_pct)" \
            "$(jq -rn "$j | if .events > 0 then (.disk_flushes / .events * 100 | round / 100) else 0 end")"
    done
    echo "client ceiling (same client, PUBLISH to redis, 64 conns): $(g "$CEIL" .events_per_s)/s"
    echo
    echo "send → SSE receipt:"
    for j in "$S_PACED" "$S_FULL"; do
        echo "  $(g "$j" .label): $(g "$j" .events_per_s) events/s, received $(g "$j" .sse_received); p50 $(g "$j" .sse.p50_us) µs, p99 $(g "$j" .sse.p99_us) µs, max $(g "$j" .sse.max_us) µs (emit p99 $(g "$j" .emit.p99_us) µs)"
    done
    echo "send → delivered to the subscriber addon (one at a time, 300 events): p50 $(g "$SUBR" .delivered.p50_us) µs, p99 $(g "$SUBR" .delivered.p99_us) µs, max $(g "$SUBR" .delivered.max_us) µs; poll period ~$(g "$SUBR" .poll_period_us) µs"
    echo
    echo "redis 7 pub/sub (not durable): redis-benchmark PUBLISH c=64: $(rb_rps "$BENCH_OUT/redis-publish.txt") req/s ($(rb_lat "$BENCH_OUT/redis-publish.txt")); publish → receive at 1000/s: p50 $(g "$RLAT" .publish_to_receive.p50_us) µs, p99 $(g "$RLAT" .publish_to_receive.p99_us) µs"
    echo "redis 7 XADD, appendfsync always (durable): c=64: $(rb_rps "$BENCH_OUT/redis-xadd-aof.txt") req/s ($(rb_lat "$BENCH_OUT/redis-xadd-aof.txt"))"
} | tee "$BENCH_OUT/events.txt"

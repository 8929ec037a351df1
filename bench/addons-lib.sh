# Shared helpers for the addon, gateway and event benchmarks (issues 3, 4, 5); sourced, not run.
# Builds on bench/lib.sh (say, die, start_daemon, stop_daemon, wait_quiet, ...).
#
# The daemon started here has its own data dir under $BENCH_TMP (/var/tmp), the port range
# 8800–8899, the networks addond_bench2 / addond_bench2_iso (172.28/172.29.0.0/16) and the
# gateway on 127.0.0.1:7180, so it collides neither with the foundation benchmarks
# (8600–8999 is theirs only while they run; they use addond_bench) nor with a dev daemon or
# the tests. nginx and redis-server run as our own processes on loopback ports 7181 / 7182
# (BENCH_NGINX_PORT, BENCH_REDIS_PORT) and are stopped by cleanup_all.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BENCH2_NETWORK="addond_bench2"
BENCH2_ISOLATED="addond_bench2_iso"
GATEWAY_ADDR="${BENCH_GATEWAY:-127.0.0.1:7180}"
NGINX_PORT="${BENCH_NGINX_PORT:-7181}"
# nginx's second server: in front of the container's own address (see bench/nginx/addons.conf).
NGINX_PORT2="${BENCH_NGINX_PORT2:-7183}"
REDIS_PORT="${BENCH_REDIS_PORT:-7182}"
BENCH_OUT="${BENCH_OUT:-$BENCH_DIR/results}"
# wrk measurement window per run (seconds); BENCH_WRK_DURATION overrides.
WRK_DURATION="${BENCH_WRK_DURATION:-10}"
mkdir -p "$BENCH_OUT"

# Installs wrk, nginx, redis, hyperfine, jq, python3 from Debian when missing (idempotent).
# Debian's policy-rc.d in containers keeps the packaged services from starting; if a
# system nginx/redis was started anyway it is none of ours and stays untouched: ours use
# their own ports, configs and pid files.
ensure_tools2() {
    ensure_tools
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || missing+=(nginx)
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-benchmark >/dev/null || missing+=(redis-tools)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        local sudo=""
        [[ $EUID -eq 0 ]] || sudo="sudo -n"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Pins the release binaries (others rebuild the shared target dir meanwhile) unless the
# caller already did (bench/run.sh exports ADDOND_BIN / ADDONCTL_BIN).
pin_binaries() {
    if [[ -z "${ADDOND_BIN:-}" ]]; then
        [[ -x "$ADDOND" ]] || die "no release binary at $ADDOND: run cargo build --release --bins"
        PINNED_BIN_DIR="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench2-bin.XXXXXX")"
        cp "$ADDOND" "$ADDONCTL" "$PINNED_BIN_DIR/"
        export ADDOND_BIN="$PINNED_BIN_DIR/addond" ADDONCTL_BIN="$PINNED_BIN_DIR/addonctl"
        ADDOND="$ADDOND_BIN" ADDONCTL="$ADDONCTL_BIN"
    fi
}

# Config for data dir $1 (see the header for why these values).
write_config2() {
    local dir="$1"
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
[daemon]
data_dir = "$dir/data"
socket_path = "$dir/addond.sock"
log_level = "info"

[ports]
range_start = 8800
range_end = 8899

[docker]
network = "$BENCH2_NETWORK"
subnet = "172.28.0.0/16"
isolated_network = "$BENCH2_ISOLATED"
isolated_subnet = "172.29.0.0/16"

[gateway]
listen = "$GATEWAY_ADDR"

[addon_api]
port = 0
EOF
}

# curl on the admin socket of $DATA: api METHOD PATH [JSON body]. Prints the body; fails on
# a non-2xx status.
api() {
    local method="$1" path="$2" body="${3:-}"
    if [[ -n "$body" ]]; then
        curl -sS --fail-with-body --unix-socket "$DATA/addond.sock" -X "$method" -H 'content-type: application/json' --data-binary "$body" "http://addond$path"
    else
        curl -sS --fail-with-body --unix-socket "$DATA/addond.sock" -X "$method" "http://addond$path"
    fi
}

# Starts the bench daemon on a fresh data dir; sets DATA and DAEMON_PID.
start_bench2_daemon() {
    DATA="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench2.XXXXXX")"
    write_config2 "$DATA"
    "$ADDOND" --config "$DATA/config.toml" check-config >/dev/null || die "config rejected: $DATA/config.toml"
    DAEMON_PID="$(start_daemon "$DATA")"
    say "addond pid $DAEMON_PID, data dir $DATA, gateway $GATEWAY_ADDR"
}

# Registers and installs manifest JSON $2 as addon $1 (one instance, waits until Started),
# prints the first instance's host port.
install_addon() {
    local name="$1" manifest="$2"
    api POST /api/addons/register "$manifest" >/dev/null
    api POST "/api/addons/$name/install?wait=started&timeout=120" '{}' >/dev/null
    local info
    info="$(api GET "/api/addons/$name")"
    if [[ -z "${DAEMON_ID:-}" ]]; then
        local cid
        cid="$(jq -r '.data.services[0].id' <<<"$info")"
        cid="$(api GET "/api/plugin-microservice/services/$cid" | jq -r '.data.instances[0].container_id')"
        DAEMON_ID="$(docker inspect "$cid" --format '{{index .Config.Labels "addond.daemon"}}')"
        say "daemon id $DAEMON_ID (containers labelled addond.daemon=$DAEMON_ID)"
    fi
    jq -er '.data.services[0].instances[0].host_port' <<<"$info"
}

# A grant for addon $1 under a new application "bench-$1", no rate limit; prints the key.
grant_key() {
    local addon="$1"
    api POST /api/applications "{\"name\": \"bench-$addon\"}" >/dev/null
    api POST /api/application-grants "{\"application\": \"bench-$addon\", \"addon\": \"$addon\"}" | jq -er '.data.api_key'
}

# Starts nginx (our own process, own prefix dir) from template bench/nginx/$1.conf with
# @UPSTREAM_PORT@ (host port, $2) and @UPSTREAM_ADDR@ (container address:port, $3) filled in.
# Sets NGINX_DIR.
start_nginx() {
    local conf="$1" upstream="$2" upstream_addr="$3"
    NGINX_DIR="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench2-nginx.XXXXXX")"
    mkdir -p "$NGINX_DIR/logs" "$NGINX_DIR/tmp"
    chmod 755 "$NGINX_DIR"   # the worker user (nobody when run as root) reads below it
    sed -e "s|@NGINX_PORT@|$NGINX_PORT|g" -e "s|@NGINX_PORT2@|$NGINX_PORT2|g" -e "s|@UPSTREAM_PORT@|$upstream|g" \
        -e "s|@UPSTREAM_ADDR@|$upstream_addr|g" -e "s|@PREFIX@|$NGINX_DIR|g" \
        "$BENCH_DIR/nginx/$conf.conf" >"$NGINX_DIR/nginx.conf"
    nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log" -t -q || die "nginx config rejected"
    nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/logs/error.log"
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT2/" \
            && { say "nginx $(nginx -v 2>&1 | sed 's/.*\///') on 127.0.0.1:$NGINX_PORT → 127.0.0.1:$upstream, on 127.0.0.1:$NGINX_PORT2 → $upstream_addr"; return 0; }
        sleep 0.05
    done
    die "nginx did not answer on 127.0.0.1:$NGINX_PORT"
}

stop_nginx() {
    [[ -n "${NGINX_DIR:-}" && -f "$NGINX_DIR/nginx.pid" ]] || return 0
    local pid
    pid="$(cat "$NGINX_DIR/nginx.pid")"
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    rm -rf "$NGINX_DIR"
    NGINX_DIR=""
}

# Starts redis-server (our own process, no persistence unless $1 = aof-always) on
# 127.0.0.1:$REDIS_PORT. Sets REDIS_PID, REDIS_DIR.
start_redis() {
    local mode="${1:-none}"
    REDIS_DIR="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench2-redis.XXXXXX")"
    local persist=(--save '' --appendonly no)
    [[ "$mode" == aof-always ]] && persist=(--save '' --appendonly yes --appendfsync always)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --daemonize no \
        --logfile "$REDIS_DIR/redis.log" "${persist[@]}" &
    REDIS_PID=$!
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && { say "redis-server $(redis-server --version | awk '{print $3}') pid $REDIS_PID on 127.0.0.1:$REDIS_PORT ($mode)"; return 0; }
        sleep 0.05
    done
    die "redis-server did not answer on $REDIS_PORT"
}

stop_redis() {
    [[ -n "${REDIS_PID:-}" ]] || return 0
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    rm -rf "$REDIS_DIR"
    REDIS_PID=""
}

# Uninstalls every addon of the bench daemon, deletes any service left, stops the daemon,
# removes its containers (by label, as a last resort), networks and data dir. Idempotent.
cleanup_all() {
    stop_nginx || true
    stop_redis || true
    if [[ -n "${DATA:-}" && -d "$DATA" ]]; then
        if [[ -S "$DATA/addond.sock" ]] && curl -sf --unix-socket "$DATA/addond.sock" -o /dev/null http://addond/health; then
            local inst
            for inst in $(api GET /api/addons 2>/dev/null | jq -r '.data.installed[]? | if type == "object" then .instance else . end' 2>/dev/null); do
                api DELETE "/api/addons/$inst?force=true&wait=deleted&timeout=120" >/dev/null 2>&1 || say "warning: uninstall of $inst failed"
            done
            delete_all_services "$DATA"
            stop_daemon "$DATA" || true
        fi
        local ids=""
        [[ -n "${DAEMON_ID:-}" ]] && ids="$(docker ps -aq --filter "label=addond.daemon=$DAEMON_ID" 2>/dev/null)"
        ids="$ids $(docker ps -aq --filter "network=$BENCH2_NETWORK" 2>/dev/null) $(docker ps -aq --filter "network=$BENCH2_ISOLATED" 2>/dev/null)"
        ids="$(echo $ids | tr ' ' '\n' | sort -u | tr '\n' ' ')"
        if [[ -n "${ids// /}" ]]; then
            say "warning: removing leftover containers: $(echo $ids)"
            docker rm -f $ids >/dev/null 2>&1 || true
        fi
        docker network rm "$BENCH2_NETWORK" "$BENCH2_ISOLATED" >/dev/null 2>&1 || true
        rm -rf "$DATA"
        DATA=""
    fi
    [[ -n "${PINNED_BIN_DIR:-}" ]] && rm -rf "$PINNED_BIN_DIR"
    PINNED_BIN_DIR=""
}

# Waits while another benchmark (hyperfine, wrk, redis-benchmark) runs on the machine, then
# for the machine to be quiet (lib.sh's wait_quiet). Prints the busy figure.
wait_turn() {
    local start=$SECONDS
    while pgrep -f hyperfine >/dev/null || pgrep -x wrk >/dev/null || pgrep -x redis-benchmark >/dev/null; do
        ((SECONDS - start > 900)) && { say "another benchmark still running after 900 s; going on"; break; }
        say "another benchmark is running; waiting"
        sleep 10
    done
    wait_quiet "${1:-${BENCH_QUIET_WAIT:-300}}"
}

# Machine description for the result files.
machine_info() {
    echo "date:     $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu:      $(nproc) cores, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory:   $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel:   $(uname -sr)"
    echo "os:       $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "disk:     $(df -T "${BENCH_TMP:-/var/tmp}" | awk 'NR == 2 { print $2 " on " $1 }') (data dir under ${BENCH_TMP:-/var/tmp})"
    echo "docker:   $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    echo "tools:    $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}'), nginx $(nginx -v 2>&1 | sed 's/.*\///'), redis $(redis-server --version | awk '{print $3}' | sed 's/v=//'), $(python3 --version)"
    echo "addond:   $("$ADDOND" --version), built from $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?') ($(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l) files under src/ changed or new since that commit)"
    echo "load:     $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at start)"
}

# Runs wrk with $BENCH_DIR/wrk-report.lua-style reporting: wrk_run LABEL CONNS URL [wrk args...].
# Keeps the raw output in $BENCH_OUT/wrk-LABEL.txt and prints it; the last line is a JSON
# summary (rps, p50/p90/p99/p99.9 in µs, errors, non-2xx) added by the Lua script's done().
wrk_run() {
    local label="$1" conns="$2" url="$3"; shift 3
    local threads=2
    ((conns < 2)) && threads=1
    local out="$BENCH_OUT/wrk-$label.txt"
    {
        echo "\$ wrk -t$threads -c$conns -d${WRK_DURATION}s --latency $* $url"
        wrk -t"$threads" -c"$conns" -d"${WRK_DURATION}s" --latency "$@" "$url" 2>&1
    } | tee "$out" >&2
    local json
    json="$(grep '^{"label"' "$out" | tail -1 | sed "s/\"label\":\"\"/\"label\":\"$label\"/")"
    [[ -n "$json" ]] || die "wrk printed no summary for $label (see $out)"
    echo "$json" >>"$BENCH_OUT/wrk-summary-${WRK_GROUP:-all}.jsonl"
    echo "$json"
}

# The echo addon the addon and gateway benchmarks call: the sample image as addon
# `bench-echo`, one replica, with a host port (network.internet), SAMPLE_QUIET (no log line
# per request), enough connection threads for 64 clients through three paths, and a CPU
# limit of 2 (the whole machine) instead of the default 0.5, so that the addon is not what
# limits any of the three paths.
ECHO_ADDON="bench-echo"
ECHO_MANIFEST='{"name": "bench-echo", "version": "1.0.0", "image": "addond-sample:latest",
  "permissions": ["network.internet"], "actions": ["echo", "add"],
  "widgets": [{"name": "checkout", "category": "form"}],
  "services": [{"name": "api", "replicas": 1,
    "environment": {"SAMPLE_QUIET": "1", "SAMPLE_MAX_CONNECTIONS": "1024"},
    "resource_limits": {"memory": "256m", "cpu": "2", "pids": 2048}}]}'
# What the web platform sends to execute, and what addond then POSTs to /execute/echo
# (the data, serialised with sorted keys).
EXEC_BODY='{"action":"echo","data":{"order":7,"items":["a","b"],"note":"bench"}}'
DIRECT_BODY='{"items":["a","b"],"note":"bench","order":7}'

# Starts the daemon, installs bench-echo, grants a key, starts nginx in front of the addon
# (host port and container address), and checks that every path answers the same. Sets
# ECHO_PORT (host port), ECHO_ADDR (the container's address:port on the addon network, which
# is where addond itself calls it) and API_KEY.
setup_echo() {
    start_bench2_daemon
    ECHO_PORT="$(install_addon "$ECHO_ADDON" "$ECHO_MANIFEST")"
    API_KEY="$(grant_key "$ECHO_ADDON")"
    local cid ip
    # Each addon has networks of its own (named after the daemon and the addon), so the
    # container is found through the API.
    local sid
    sid="$(api GET "/api/addons/$ECHO_ADDON" | jq -r '.data.services[0].id')"
    cid="$(api GET "/api/plugin-microservice/services/$sid" | jq -r '.data.instances[0].container_id')"
    DAEMON_ID="$(docker inspect "$cid" --format '{{index .Config.Labels "addond.daemon"}}')"
    ip="$(docker inspect "$cid" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' | awk '{ print $1 }')"
    [[ -n "$ip" ]] || die "no address for the addon's container"
    ECHO_ADDR="$ip:8080"
    say "addon $ECHO_ADDON on host port $ECHO_PORT, container address $ECHO_ADDR; key ${API_KEY:0:16}…"
    start_nginx addons "$ECHO_PORT" "$ECHO_ADDR"
    local via_gw direct direct2 via_nginx via_nginx2
    via_gw="$(curl -sS --fail-with-body -H "apikey: $API_KEY" -H 'content-type: application/json' -d "$EXEC_BODY" "http://$GATEWAY_ADDR/api/addons/$ECHO_ADDON/execute")"
    direct="$(curl -sS --fail-with-body -H 'content-type: application/json' -d "$DIRECT_BODY" "http://127.0.0.1:$ECHO_PORT/execute/echo")"
    direct2="$(curl -sS --fail-with-body -H 'content-type: application/json' -d "$DIRECT_BODY" "http://$ECHO_ADDR/execute/echo")"
    via_nginx="$(curl -sS --fail-with-body -H 'content-type: application/json' -d "$DIRECT_BODY" "http://127.0.0.1:$NGINX_PORT/execute/echo")"
    via_nginx2="$(curl -sS --fail-with-body -H 'content-type: application/json' -d "$DIRECT_BODY" "http://127.0.0.1:$NGINX_PORT2/execute/echo")"
    say "gateway execute      → $via_gw"
    say "direct (host port)   → $direct"
    say "direct (container)   → $direct2"
    say "nginx (host port)    → $via_nginx"
    say "nginx (container)    → $via_nginx2"
    local want
    want="$(jq -cS . <<<"$direct")"
    for got in "$(jq -cS .data <<<"$via_gw")" "$(jq -cS . <<<"$direct2")" "$(jq -cS . <<<"$via_nginx")" "$(jq -cS . <<<"$via_nginx2")"; do
        [[ "$got" == "$want" ]] || die "the paths do not answer the same: $got vs $want"
    done
}

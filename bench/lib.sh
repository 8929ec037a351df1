# shellcheck shell=bash
# Shared helpers for the addond benchmarks (sourced, not run).
#
# Every daemon started here gets its own data dir and socket under $BENCH_TMP, the port
# range 8600–8999 and its own networks (addond_bench, addond_bench_isolated), so the
# benchmarks never collide with a dev daemon (addond, 8000+) or the tests (addond_test).

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
# Release binaries from the shared target dir (CARGO_TARGET_DIR if set).
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
ADDOND="${ADDOND_BIN:-$TARGET_DIR/release/addond}"
ADDONCTL="${ADDONCTL_BIN:-$TARGET_DIR/release/addonctl}"
IMAGE="${BENCH_IMAGE:-addond-sample:latest}"
BENCH_NETWORK="addond_bench"
BENCH_ISOLATED="addond_bench_isolated"
# The subnet of $BENCH_NETWORK (written into every config below): where the daemon reaches
# the instances by default (ports.instance_address = "container").
BENCH_SUBNET="172.26.0.0/16"
# Host port of the plain-docker baseline container: outside the 8000–9000 addon range.
# shellcheck disable=SC2034 # used by docker-run-wait.sh
DOCKER_PORT="${BENCH_DOCKER_PORT:-9600}"
DOCKER_NAME="addond-bench-docker"

say() { echo "bench: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Writes a daemon config for data dir $1 (config.toml, data/, addond.sock inside it).
write_config() {
    local dir="$1"
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
[daemon]
data_dir = "$dir/data"
socket_path = "$dir/addond.sock"
log_level = "info"

[ports]
range_start = 8600
range_end = 8999

[docker]
network = "$BENCH_NETWORK"
subnet = "$BENCH_SUBNET"
isolated_network = "$BENCH_ISOLATED"
isolated_subnet = "172.27.0.0/16"
EOF
    # Listeners newer daemons have (the gateway, the addon API): ephemeral ports, so a dev
    # daemon or the tests holding the default ports do not stop ours. Only written when the
    # binary knows the section (an unknown key stops the daemon).
    local known
    known="$("$ADDOND" --config "$dir/config.toml" print-config 2>/dev/null || true)"
    if grep -q '^\[gateway\]' <<<"$known"; then
        printf '\n[gateway]\nlisten = "127.0.0.1:0"\n' >>"$dir/config.toml"
    fi
    if grep -q '^\[addon_api\]' <<<"$known"; then
        printf '\n[addon_api]\nport = 0\n' >>"$dir/config.toml"
    fi
}

# Starts a daemon on data dir $1 in the background and waits until its socket answers.
# Prints the pid.
start_daemon() {
    local dir="$1" pid
    "$ADDOND" --config "$dir/config.toml" >>"$dir/addond.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        curl -sf --unix-socket "$dir/addond.sock" -o /dev/null http://addond/health && { echo "$pid"; return 0; }
        kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/addond.log" >&2; die "addond exited at start (log: $dir/addond.log)"; }
        sleep 0.05
    done
    die "addond did not answer on $dir/addond.sock within 15 s"
}

# SIGTERM to the daemon of data dir $1 (if running), then wait until it has exited
# (its flock on data/addond.pid is released). Containers keep running.
stop_daemon() {
    local dir="$1" pid
    [[ -f "$dir/data/addond.pid" ]] || return 0
    pid="$(cat "$dir/data/addond.pid" 2>/dev/null || true)"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    wait_stopped "$dir"
}

# Waits (up to 60 s) until no daemon holds data dir $1.
wait_stopped() {
    flock -w 60 "$1/data/addond.pid" true || die "the daemon of $1 did not exit within 60 s"
}

ctl() { local dir="$1"; shift; "$ADDONCTL" --socket "$dir/addond.sock" "$@"; }

# Number of services of the daemon of $1 whose phase is Started.
count_started() {
    curl -sf --unix-socket "$1/addond.sock" http://addond/api/plugin-microservice/health \
        | jq '[.data.services[] | select(.phase == "Started")] | length'
}

# Waits until $2 services of the daemon of $1 are Started (timeout $3 s, default 300).
wait_all_started() {
    local dir="$1" want="$2" limit="${3:-300}" n=0 start=$SECONDS
    while ((SECONDS - start < limit)); do
        n="$(count_started "$dir" || echo 0)"
        ((n >= want)) && return 0
        sleep 0.2
    done
    die "only $n of $want services Started after ${limit}s"
}

# Deletes every service of the daemon of $1 and waits until all are gone.
delete_all_services() {
    local dir="$1" ids id
    ids="$(ctl "$dir" -q services list 2>/dev/null || true)"
    for id in $ids; do
        ctl "$dir" -q services delete "$id" >/dev/null 2>&1 || true
    done
    for _ in $(seq 600); do
        [[ -z "$(ctl "$dir" -q services list 2>/dev/null || true)" ]] && return 0
        sleep 0.2
    done
    say "warning: services of $dir still listed after 120 s"
}

# Last resort: remove every container on the bench networks (only our daemons use them),
# the docker baseline container, and the bench networks.
docker_cleanup() {
    local ids
    docker rm -f "$DOCKER_NAME" >/dev/null 2>&1 || true
    ids="$(docker ps -aq --filter "network=$BENCH_NETWORK" 2>/dev/null || true)"
    [[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1 || true
    ids="$(docker ps -aq --filter "network=$BENCH_ISOLATED" 2>/dev/null || true)"
    [[ -n "$ids" ]] && docker rm -f $ids >/dev/null 2>&1 || true
    docker network rm "$BENCH_NETWORK" "$BENCH_ISOLATED" >/dev/null 2>&1 || true
}

# Installs hyperfine (and the small tools the scripts use) when missing.
ensure_tools() {
    local missing=()
    command -v hyperfine >/dev/null || missing+=(hyperfine)
    command -v jq >/dev/null || missing+=(jq)
    command -v curl >/dev/null || missing+=(curl)
    command -v ss >/dev/null || missing+=(iproute2)
    command -v flock >/dev/null || missing+=(util-linux)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        local sudo=""
        [[ $EUID -eq 0 ]] || sudo="sudo -n"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Integer kB from /proc/PID/status.
proc_status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# utime+stime (clock ticks) of PID from /proc/PID/stat (fields 14 and 15, after the comm).
proc_cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Makes data dir $1 hold $2 healthy services (memory 16m, cpu 0.05), created through the
# API, then stops the daemon with SIGTERM; the containers keep running.
setup_services() {
    local dir="$1" n="$2" pid i t0
    write_config "$dir"
    pid="$(start_daemon "$dir")"
    t0=$SECONDS
    for i in $(seq -w 1 "$n"); do
        ctl "$dir" -q services create --name "bench-n-$i" --image "$IMAGE" --memory 16m --cpu 0.05 >/dev/null
    done
    ((n == 0)) || wait_all_started "$dir" "$n" 600
    say "$n services Started in $((SECONDS - t0)) s (daemon pid $pid, data dir $dir)"
    stop_daemon "$dir"
}

# Removes the services of data dir $1 through its daemon (started for that), stops it and
# removes the directory.
teardown_services() {
    local dir="$1"
    [[ -d "$dir" ]] || return 0
    if [[ -f "$dir/config.toml" ]]; then
        if ! [[ -S "$dir/addond.sock" ]] || ! curl -sf --unix-socket "$dir/addond.sock" -o /dev/null http://addond/health; then
            wait_stopped "$dir" 2>/dev/null || true
            start_daemon "$dir" >/dev/null || true
        fi
        delete_all_services "$dir"
        stop_daemon "$dir" || true
    fi
    rm -rf "$dir"
}

# Removes the bench networks when nothing uses them any more.
remove_bench_networks() {
    docker network rm "$BENCH_NETWORK" "$BENCH_ISOLATED" >/dev/null 2>&1 || true
}

# Percent of the machine's CPU time that was busy over $1 seconds (from /proc/stat).
cpu_busy_pct() {
    local a b
    a="$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)"
    sleep "$1"
    b="$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat)"
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]; printf "%d", (busy + idle) ? 100 * busy / (busy + idle) : 0 }'
}

# Waits up to $1 seconds (BENCH_QUIET_WAIT, default 600) for the machine to be quiet (under
# 15% busy over 5 s: other builds and tests share these 2 cores), then goes on regardless.
# Prints the last busy figure.
wait_quiet() {
    local limit="${1:-${BENCH_QUIET_WAIT:-600}}" start=$SECONDS busy
    while :; do
        busy="$(cpu_busy_pct 5)"
        if ((busy < 15)); then echo "$busy"; return 0; fi
        if ((SECONDS - start >= limit)); then say "machine still ${busy}% busy after ${limit}s; going on"; echo "$busy"; return 0; fi
        say "machine ${busy}% busy (other builds/tests?); waiting for it to be quiet"
    done
}

#!/usr/bin/env bash
# The measured command of benchmark 2: exec addond on a prepared data dir, wait until it is
# ready, then SIGTERM it (without waiting for it to exit; the next run's --prepare does).
#   daemon-ready.sh DIR N health   ready = the socket answers GET /health
#   daemon-ready.sh DIR N api      ready = the socket answers GET /health and all N services
#                                  report phase Started
#   daemon-ready.sh DIR N probed   ready = the above, and the daemon's health monitor holds an
#                                  established connection to each of the N instances, on
#                                  their container addresses in the bench network's subnet
#                                  (or host ports, with ports.instance_address = "host_port"):
#                                  it has adopted and re-probed every container
# Polls every 5 ms; gives up (exit 1) after 120 s.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="$1" want="$2" mode="${3:-api}"
sock="$dir/addond.sock"
"$ADDOND" --config "$dir/config.toml" >>"$dir/addond.log" 2>&1 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT

# A sleep that forks nothing: read with a timeout on a pipe nobody writes to.
exec {nap}<> <(:)
nap() { read -rt 0.005 -u "$nap" || true; }
start=$SECONDS
alive() {
    kill -0 "$pid" 2>/dev/null || die "addond exited (log: $dir/addond.log)"
    ((SECONDS - start < 120)) || die "not ready after 120 s"
}

until curl -sf --unix-socket "$sock" -o /dev/null http://addond/health 2>/dev/null; do alive; nap; done
if ((want > 0)) && [[ "$mode" != health ]]; then
    until (($(count_started "$dir" 2>/dev/null || echo 0) >= want)); do alive; nap; done
fi
if [[ "$mode" == probed ]]; then
    probes() { ss -Htnp state established "( ( dport >= :8600 and dport <= :8999 ) or dst $BENCH_SUBNET )" | grep -c "pid=$pid," || true; }
    until (($(probes) >= want)); do alive; nap; done
fi

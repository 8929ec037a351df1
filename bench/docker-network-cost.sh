#!/usr/bin/env bash
# Ad-hoc companion of benchmark 1 (not run by run.sh): which of the settings addond gives its
# containers makes `docker run -d` slower? Adds one setting at a time to the issue's flags
# and times `docker run -d` (create + start), in interleaved rounds; prints medians.
#   docker-network-cost.sh [ROUNDS]   (default 15)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rounds="${1:-15}"
name=addond-bench-netcost
base=(--read-only --cap-drop ALL --security-opt no-new-privileges:true --user 65534:65534
    --memory 512m --cpus 0.5 --pids-limit 256 -p "127.0.0.1:$DOCKER_PORT:8080" -e PORT=8080)
order=(plain network network+alias tmpfs-options memory-swap log-options)
declare -A extra=(
    [plain]="--tmpfs /tmp"
    [network]="--tmpfs /tmp --network $BENCH_NETWORK"
    [network+alias]="--tmpfs /tmp --network $BENCH_NETWORK --network-alias x"
    [tmpfs-options]="--tmpfs /tmp:rw,noexec,nosuid,nodev,size=67108864"
    [memory-swap]="--tmpfs /tmp --memory-swap 512m"
    [log-options]="--tmpfs /tmp --log-opt max-size=10m --log-opt max-file=3"
)
made_net=0
if ! docker network inspect "$BENCH_NETWORK" >/dev/null 2>&1; then
    docker network create --subnet 172.26.0.0/16 "$BENCH_NETWORK" >/dev/null
    made_net=1
fi
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    ((made_net)) && docker network rm "$BENCH_NETWORK" >/dev/null 2>&1 || true
}
trap cleanup EXIT

declare -A times
for _ in $(seq "$rounds"); do
    for k in "${order[@]}"; do
        docker rm -f "$name" >/dev/null 2>&1 || true
        sleep 0.3
        t0=$(date +%s%N)
        # shellcheck disable=SC2086 # the extra flags are split on purpose
        docker run -d --name "$name" "${base[@]}" ${extra[$k]} "$IMAGE" >/dev/null
        t1=$(date +%s%N)
        times[$k]+="$(( (t1 - t0) / 1000000 )) "
    done
done
for k in "${order[@]}"; do
    # shellcheck disable=SC2086
    printf '%-14s median %4s ms   [%s]\n' "$k" "$(printf '%s\n' ${times[$k]} | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')" "${times[$k]% }"
done

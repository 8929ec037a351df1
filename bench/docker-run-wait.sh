#!/usr/bin/env bash
# The plain-Docker side of benchmark 1: `docker run -d` of the sample image with the same
# sandbox flags addond uses, then a tight curl loop until GET /health answers 200.
#   docker-run-wait.sh plain    the flags of the issue, on Docker's default bridge
#   docker-run-wait.sh addond   also addond's network (addond_bench, with an alias), tmpfs
#                               options, memory-swap and log rotation: the container addond
#                               creates, made by hand
# Removing the container is left to the caller (hyperfine --prepare/--cleanup).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

variant="${1:-plain}"
flags=(--read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges:true
    --user 65534:65534 --memory 512m --cpus 0.5 --pids-limit 256
    -p "127.0.0.1:$DOCKER_PORT:8080" -e PORT=8080)
case "$variant" in
    plain) ;;
    addond)
        # shellcheck disable=SC2054 # the commas belong to the tmpfs options
        flags=(--read-only --tmpfs /tmp:rw,noexec,nosuid,nodev,size=67108864 --cap-drop ALL
            --security-opt no-new-privileges:true --user 65534:65534 --memory 512m
            --memory-swap 512m --cpus 0.5 --pids-limit 256 --restart no
            --network "$BENCH_NETWORK" --network-alias bench-create
            --log-driver json-file --log-opt max-size=10m --log-opt max-file=3
            --label addond.bench=true -p "127.0.0.1:$DOCKER_PORT:8080" -e PORT=8080)
        ;;
    *) die "usage: docker-run-wait.sh plain|addond" ;;
esac

docker run -d --name "$DOCKER_NAME" "${flags[@]}" "$IMAGE" >/dev/null
# Bounded: at most 20000 probes (each fails in well under a millisecond when nothing listens,
# or waits at most 1 s), then give up.
n=0
until curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$DOCKER_PORT/health"; do
    ((++n < 20000)) || die "the container did not answer /health"
done

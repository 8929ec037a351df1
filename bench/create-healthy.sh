#!/usr/bin/env bash
# Benchmark 1: create → first successful health probe, through addond vs plain docker.
#
# One hyperfine invocation, three commands:
#   addond         addonctl services create --name bench-create --image addond-sample:latest --wait
#                  (returns when the daemon's own health check passed and the phase is Started)
#   docker plain   docker run -d with the issue's sandbox flags on the default bridge, then a
#                  tight curl loop until GET /health answers 200
#   docker addond  the same, but the container addond itself creates (its network with an
#                  alias, tmpfs options, memory-swap, log rotation), made by hand
# Deleting is not measured: each command's --prepare removes what the previous run made
# (addonctl delete --wait / docker rm -f) and then sleeps 0.5 s so Docker's asynchronous
# teardown does not overlap the measured run; --cleanup removes the last one.
# Afterwards, a few traced runs of each (docker events) split the time into phases.
#
#   BENCH_RUNS (20), BENCH_WARMUP (3), BENCH_OUT (results dir), BENCH_TMP (parent of temp dirs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs="${BENCH_RUNS:-20}"
warmup="${BENCH_WARMUP:-3}"
out="${BENCH_OUT:-$BENCH_DIR/results}"
mkdir -p "$out"
ensure_tools
[[ -x "$ADDOND" && -x "$ADDONCTL" ]] || die "release binaries missing: cargo build --release --bins"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "image $IMAGE missing: scripts/build-sample-image.sh"

dir="$(mktemp -d "${BENCH_TMP:-/var/tmp}/addond-bench-create.XXXXXX")"
cleanup() {
    if [[ -S "$dir/addond.sock" ]]; then
        ctl "$dir" services delete bench-create --wait >/dev/null 2>&1 || true
        delete_all_services "$dir"
    fi
    stop_daemon "$dir" || true
    docker rm -f "$DOCKER_NAME" >/dev/null 2>&1 || true
    rm -rf "$dir"
    remove_bench_networks
}
trap cleanup EXIT
write_config "$dir"
pid="$(start_daemon "$dir")"
say "benchmark 1: daemon pid $pid, data dir $dir"

sock="$dir/addond.sock"
create_cmd="$ADDONCTL --socket $sock services create --name bench-create --image $IMAGE --wait"
prep_addond="$ADDONCTL --socket $sock services delete bench-create --wait >/dev/null 2>&1 || true; sleep 0.5"
prep_docker="docker rm -f $DOCKER_NAME >/dev/null 2>&1 || true; sleep 0.5"
cleanup_cmd="$ADDONCTL --socket $sock services delete bench-create --wait >/dev/null 2>&1 || true; docker rm -f $DOCKER_NAME >/dev/null 2>&1 || true"

args=(--style basic --warmup "$warmup" --runs "$runs"
    --export-json "$out/create-healthy.json" --export-markdown "$out/create-healthy.md"
    --prepare "$prep_addond" --prepare "$prep_docker" --prepare "$prep_docker"
    --cleanup "$cleanup_cmd"
    -n "addond: addonctl create --wait" "$create_cmd"
    -n "docker run + curl /health (issue flags)" "$BENCH_DIR/docker-run-wait.sh plain"
    -n "docker run + curl /health (addond's container config)" "$BENCH_DIR/docker-run-wait.sh addond")
echo "hyperfine ${args[*]@Q}" >"$out/create-healthy.cmd"
hyperfine "${args[@]}" | tee "$out/create-healthy.txt"

# ---- where the time goes: traced runs, interleaved -----------------------------------------
# hyperfine runs all of one command, then all of the next, so a change in background load
# (other builds and tests share these 2 cores) lands on one side. These runs alternate the
# three commands and split each run with Docker's events (sent when a call completes):
# ask→"create" event, "create"→"start" event, "start" event→command returned (healthy).
trace_runs="${BENCH_TRACE_RUNS:-15}"
labels=("addond: addonctl create --wait" "docker run + curl /health (issue flags)" "docker run + curl /health (addond's container config)")
cmds=("$create_cmd" "$BENCH_DIR/docker-run-wait.sh plain" "$BENCH_DIR/docker-run-wait.sh addond")
preps=("$prep_addond" "$prep_docker" "$prep_docker")
filters=("label=addond.service_name=bench-create" "container=$DOCKER_NAME" "container=$DOCKER_NAME")
samples="$out/create-healthy-traced.tsv"
printf 'round\tcommand\ttotal_ms\task_to_created_ms\tcreated_to_started_ms\tstarted_to_healthy_ms\n' >"$samples"
ms() { echo $(( ($2 - $1) / 1000000 )); }
for r in $(seq "$trace_runs"); do
    for k in 0 1 2; do
        eval "${preps[$k]}"
        t0=$(date +%s%N)
        eval "${cmds[$k]}" >/dev/null
        t1=$(date +%s%N)
        sleep 0.2
        ev="$(docker events --since "$(( t0 / 1000000000 - 1 ))" --until "$(date +%s.%N)" --filter type=container --filter "${filters[$k]}" \
            --filter event=create --filter event=start --format '{{.TimeNano}} {{.Action}}' | awk -v t0="$t0" '$1 >= t0')"
        c="$(awk '$2 == "create" { print $1; exit }' <<<"$ev")"
        s="$(awk '$2 == "start" { print $1; exit }' <<<"$ev")"
        [[ -n "$c" && -n "$s" ]] || continue
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$k" "$(ms "$t0" "$t1")" "$(ms "$t0" "$c")" "$(ms "$c" "$s")" "$(ms "$s" "$t1")" >>"$samples"
    done
done
{
    echo "Interleaved traced runs (medians of $trace_runs each; not part of the hyperfine timing):"
    for k in 0 1 2; do
        awk -F'\t' -v k="$k" -v label="${labels[$k]}" '
            NR > 1 && $2 == k { n++; t[n] = $3; a[n] = $4; b[n] = $5; c[n] = $6 }
            function med(x,   i, j, tmp) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { tmp = x[i]; x[i] = x[j]; x[j] = tmp }
                return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2 }
            END { printf "%-56s total %5.1f ms = ask→created %5.1f + created→started %5.1f + started→healthy %5.1f  (n=%d)\n", label, med(t), med(a), med(b), med(c), n }' "$samples"
    done
    awk -F'\t' 'NR > 1 { tot[$1, $2] = $3; seen[$1] = 1 }
        END { for (r in seen) if (((r, 0) in tot) && ((r, 1) in tot)) { n++; x[n] = tot[r, 0] / tot[r, 1] }
              for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
              printf "median per-round ratio addond / docker (issue flags): %.2f×  (n=%d)\n", (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2, n }' "$samples"
} | tee "$out/create-healthy-phases.txt"
eval "$cleanup_cmd"

ratio() { jq -r --argjson i "$1" '.results as $r | "\($r[0].mean / $r[$i].mean * 1000 | round / 1000)×  (median \($r[0].median / $r[$i].median * 1000 | round / 1000)×)"' "$out/create-healthy.json"; }
{
    echo "addond / docker (issue flags):            $(ratio 1)   goal ≤ 1.2×"
    echo "addond / docker (addond's container):     $(ratio 2)"
} | tee "$out/create-healthy-ratio.txt"

#!/usr/bin/env bash
# Build the sample addon image (default addond-sample:latest) from a static binary.
# FROM scratch only: nothing is pulled, no registry needed.
#   SAMPLE_IMAGE      image tag (default addond-sample:latest)
#   CARGO_TARGET_DIR  cargo target dir (default <repo>/target/sample)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${SAMPLE_IMAGE:-addond-sample:latest}"
target_triple="x86_64-unknown-linux-gnu"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/sample}"

command -v cargo >/dev/null || { echo "build-sample-image: cargo not found in PATH" >&2; exit 1; }
command -v docker >/dev/null || { echo "build-sample-image: docker not found (run scripts/ensure-docker.sh)" >&2; exit 1; }

echo "build-sample-image: building static sample-addon ($target_triple)" >&2
(
    cd "$repo"
    RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --quiet --release -p sample-addon --target "$target_triple"
)
bin="$CARGO_TARGET_DIR/$target_triple/release/sample-addon"
[[ -x "$bin" ]] || { echo "build-sample-image: $bin was not produced" >&2; exit 1; }
if command -v ldd >/dev/null && ldd "$bin" 2>&1 | grep -q '=>'; then
    echo "build-sample-image: $bin is dynamically linked; FROM scratch needs a static binary" >&2
    exit 1
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/addond-sample-ctx.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/sample-addon"
cp "$repo/sample-addon/Dockerfile" "$ctx/Dockerfile"

echo "build-sample-image: docker build -t $image" >&2
# Output (incl. the legacy builder's deprecation notice) is only shown when the build fails.
if ! build_log="$(DOCKER_BUILDKIT=0 docker build --quiet --pull=false -t "$image" "$ctx" 2>&1)"; then
    printf '%s\n' "$build_log" >&2
    echo "build-sample-image: docker build failed" >&2
    exit 1
fi
docker image inspect --format '{{.Id}}' "$image"

#!/usr/bin/env bash
# Make sure a working Docker engine (and the build packages and host tools addond needs)
# is present.
# Idempotent; a fast no-op when everything is installed and `docker info` answers.
# For CI on a fresh Debian 12 machine (as root) and for developers (uses sudo when needed).
#   ENSURE_DOCKER_TIMEOUT  seconds to wait for a freshly started dockerd (default 60)
#   ENSURE_DOCKER_LOG      dockerd log file (default /tmp/addond-dockerd.log)
set -euo pipefail

timeout_s="${ENSURE_DOCKER_TIMEOUT:-60}"
dockerd_log="${ENSURE_DOCKER_LOG:-/tmp/addond-dockerd.log}"

say() { echo "ensure-docker: $*" >&2; }
die() { say "error: $*"; exit 1; }

# Run a command as root: directly when root, else through sudo (non-interactive first, then
# interactive if there is a terminal to ask for a password on).
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
    else
        die "need root to run: $* (not root and sudo is not installed)"
    fi
}

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
    [[ $EUID -eq 0 ]] || say "not root: installing $* with sudo"
    if [[ $apt_updated -eq 0 ]]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

have_cmd() {
    # dockerd lives in /usr/sbin, which is not on every non-root PATH.
    command -v "$1" >/dev/null || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" || -x "/usr/local/bin/$1" ]]
}

# 1. Packages.
missing=()
if ! have_cmd docker || ! have_cmd dockerd; then
    missing+=(docker.io)
fi
# nftables: `nft`, with which addond applies the table that keeps addon networks apart
# (the daemon and the tests need it, as the packaged unit does).
if command -v dpkg-query >/dev/null; then
    for p in libsystemd-dev pkg-config nftables; do
        pkg_installed "$p" || missing+=("$p")
    done
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[@]}"
fi
have_cmd docker || die "docker CLI still missing after install"

# 2. Engine.
docker_ok() { docker info >/dev/null 2>&1; }
if docker_ok; then
    exit 0
fi

# The engine may run but be unreachable for this user (socket permissions).
if [[ $EUID -ne 0 && -S /var/run/docker.sock ]] && ! [[ -w /var/run/docker.sock ]]; then
    die "the Docker socket exists but $(id -un) cannot use it; add the user to the 'docker' group (sudo usermod -aG docker $(id -un)) and log in again, or run as root"
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but not answering yet; waiting up to ${timeout_s}s"
else
    dockerd_bin="$(command -v dockerd || true)"
    [[ -n "$dockerd_bin" ]] || for d in /usr/sbin /usr/bin /usr/local/bin; do
        [[ -x "$d/dockerd" ]] && dockerd_bin="$d/dockerd" && break
    done
    [[ -n "$dockerd_bin" ]] || die "dockerd not found"
    say "starting $dockerd_bin in the background (log: $dockerd_log)"
    # setsid + nohup + no inherited stdio: the daemon outlives the calling shell and does not
    # keep a CI step's output pipes open.
    as_root sh -c 'nohup setsid "$1" >>"$2" 2>&1 </dev/null &' sh "$dockerd_bin" "$dockerd_log"
fi

deadline=$((SECONDS + timeout_s))
until docker_ok; do
    if ((SECONDS >= deadline)); then
        say "last lines of $dockerd_log:"
        tail -n 20 "$dockerd_log" >&2 2>/dev/null || true
        die "Docker engine did not answer 'docker info' within ${timeout_s}s"
    fi
    sleep 1
done
say "Docker engine is up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"

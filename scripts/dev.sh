#!/usr/bin/env bash
# Set up and start addond in dev mode, from nothing: installs what is missing (Docker engine
# included), builds the binaries and the sample addon image, starts `addond --dev` in the
# background (data, socket and config under ./.addond/) and runs the sample addon in it.
# Idempotent: run it again to rebuild and restart the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "dev: $*" >&2; }

command -v cargo >/dev/null || { say "Rust is missing: install it with rustup (https://rustup.rs), then run this again"; exit 1; }
bash scripts/ensure-docker.sh
say "building addond, addonctl and the sample addon"
cargo build --bins
bash scripts/build-sample-image.sh >/dev/null

sock=.addond/addond.sock
if [[ -f .addond/data/addond.pid ]] && kill -0 "$(cat .addond/data/addond.pid 2>/dev/null)" 2>/dev/null; then
    say "stopping the running dev daemon (pid $(cat .addond/data/addond.pid)); its containers keep running"
    kill "$(cat .addond/data/addond.pid)"
    for _ in $(seq 50); do [[ -S $sock ]] || break; sleep 0.1; done
fi
mkdir -p .addond
nohup target/debug/addond --dev >>.addond/addond.log 2>&1 &
for _ in $(seq 100); do
    target/debug/addonctl --socket "$sock" health >/dev/null 2>&1 && break
    sleep 0.1
done
target/debug/addonctl --socket "$sock" health >/dev/null || { say "addond did not start; see .addond/addond.log"; tail -20 .addond/addond.log >&2; exit 1; }
say "addond is running (log: .addond/addond.log)"

if ! target/debug/addonctl --socket "$sock" services show sample >/dev/null 2>&1; then
    target/debug/addonctl --socket "$sock" templates create rest_api_basic --name sample --wait
fi
target/debug/addonctl --socket "$sock" services list
cat >&2 <<TXT

addond runs in dev mode. Try:
  target/debug/addonctl services show sample
  target/debug/addonctl discovery
  target/debug/addonctl scale sample 3 --wait
  target/debug/addonctl logs sample -f
Stop it with: kill \$(cat .addond/data/addond.pid)
TXT

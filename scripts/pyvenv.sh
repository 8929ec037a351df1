#!/usr/bin/env bash
# Creates (or checks) a Python venv holding pinned packages, for the real protocol clients
# the tests drive addond with. Idempotent: does nothing when every pin is installed.
# Usage: scripts/pyvenv.sh VENV NAME==VERSION...   (extras allowed: gql[aiohttp]==4.4.0)
set -euo pipefail
venv="$1"; shift
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" - "$@" 2>/dev/null <<'PY'
import importlib.metadata as m, re, sys
pins = [re.match(r"([^\[=]+)(?:\[[^\]]*\])?==(.+)", p).groups() for p in sys.argv[1:]]
sys.exit(not all(m.version(name) == version for name, version in pins))
PY
then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
echo "venv ready: $venv ($*)"

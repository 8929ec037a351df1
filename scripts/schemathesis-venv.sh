#!/usr/bin/env bash
# Creates (or checks) the Python venv with schemathesis, which tests/openapi.rs runs against
# a live daemon's OpenAPI document. Idempotent: does nothing when the pinned version is there.
# The venv is $ADDOND_SCHEMATHESIS_VENV, default /var/tmp/addond-schemathesis-venv.
set -euo pipefail
SCHEMATHESIS_VERSION=4.32.5
VENV="${ADDOND_SCHEMATHESIS_VENV:-/var/tmp/addond-schemathesis-venv}"
if [[ -x "$VENV/bin/schemathesis" ]] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
echo "schemathesis venv ready: $VENV (schemathesis $SCHEMATHESIS_VERSION)"

#!/usr/bin/env bash
# Creates (or checks) the Python venv with the official MCP client that tests/mcp.rs and
# bench/mcp.sh drive addond with. Idempotent: does nothing when the pinned version is there.
# The venv is $ADDOND_MCP_VENV, default /var/tmp/addond-mcp-venv.
set -euo pipefail
MCP_VERSION=2.3.0
VENV="${ADDOND_MCP_VENV:-/var/tmp/addond-mcp-venv}"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "mcp==$MCP_VERSION"
echo "MCP client venv ready: $VENV (mcp $MCP_VERSION)"

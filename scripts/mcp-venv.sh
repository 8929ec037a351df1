#!/usr/bin/env bash
# The Python venv with the official MCP client that tests/mcp.rs and bench/mcp.sh drive
# addond with: $ADDOND_MCP_VENV, default /var/tmp/addond-mcp-venv (scripts/pyvenv.sh).
set -euo pipefail
exec bash "$(dirname "$0")/pyvenv.sh" "${ADDOND_MCP_VENV:-/var/tmp/addond-mcp-venv}" "mcp==2.3.0"

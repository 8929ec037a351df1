#!/usr/bin/env bash
# The Python venv with schemathesis, which tests/openapi.rs runs against a live daemon's
# OpenAPI document: $ADDOND_SCHEMATHESIS_VENV, default /var/tmp/addond-schemathesis-venv
# (scripts/pyvenv.sh).
set -euo pipefail
exec bash "$(dirname "$0")/pyvenv.sh" "${ADDOND_SCHEMATHESIS_VENV:-/var/tmp/addond-schemathesis-venv}" "schemathesis==4.32.5"

#!/usr/bin/env bash
# Creates (or checks) the Python venv with the GraphQL client (`gql`, with its aiohttp and
# websockets transports) that tests/graphql.rs drives addond's /graphql with. Idempotent:
# does nothing when the pinned versions are there. The venv is $ADDOND_GQL_VENV, default
# /var/tmp/addond-gql-venv.
set -euo pipefail
GQL_VERSION=4.4.0
AIOHTTP_VERSION=3.14.5
WEBSOCKETS_VERSION=17.4
VENV="${ADDOND_GQL_VENV:-/var/tmp/addond-gql-venv}"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "
import importlib.metadata as m, sys
sys.exit(not (m.version('gql') == '$GQL_VERSION' and m.version('aiohttp') == '$AIOHTTP_VERSION' and m.version('websockets') == '$WEBSOCKETS_VERSION'))" 2>/dev/null; then
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "gql[aiohttp,websockets]==$GQL_VERSION" "aiohttp==$AIOHTTP_VERSION" "websockets==$WEBSOCKETS_VERSION"
echo "GraphQL client venv ready: $VENV (gql $GQL_VERSION)"

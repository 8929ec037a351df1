#!/usr/bin/env bash
# The Python venv with the GraphQL client (`gql`, with its aiohttp and websockets
# transports) that tests/graphql.rs drives addond's /graphql with: $ADDOND_GQL_VENV, default
# /var/tmp/addond-gql-venv (scripts/pyvenv.sh).
set -euo pipefail
exec bash "$(dirname "$0")/pyvenv.sh" "${ADDOND_GQL_VENV:-/var/tmp/addond-gql-venv}" \
    "gql[aiohttp,websockets]==4.4.0" "aiohttp==3.14.5" "websockets==17.4"

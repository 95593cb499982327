#!/usr/bin/env bash
# Serve STAC items on a loopback address until Ctrl-C, for the demo or for poking at by hand.
#   bash infra/stac_local.sh rustac ITEMS... [--collection ID]   rustac serve, in memory, 127.0.0.5
#   bash infra/stac_local.sh pgstac ITEMS... [--collection ID]   stac-fastapi-pgstac on a throw-away
#                                                                PostgreSQL 15 + PostGIS, 127.0.0.6
# ITEMS: item JSON files, an .ndjson file, a FeatureCollection or a static catalog. The URL is
# printed on the first line. pgstac needs `bash infra/setup.sh --test` first. Everything (server
# processes, database directory) is removed on exit. The logic lives in pipelines/services.py
# (rustac, which the demo uses) and tests/fixtures/pgstac.py (pgstac, test infrastructure).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [[ "$1" == "pgstac" ]]; then
  shift
  exec .venv/bin/python -m tests.fixtures.pgstac "$@"
fi
exec .venv/bin/python -m pipelines.services "$@"

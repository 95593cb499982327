#!/usr/bin/env bash
# Set up everything geoxai needs on a fresh Debian/Python 3.11 machine, idempotently.
#   bash infra/setup.sh          the library, CLI and Ray in .venv (torch CPU wheel 2.13.0 here)
#   bash infra/setup.sh --test   also the test services: PostgreSQL 15 + PostGIS 3 (apt),
#                                stac-fastapi-pgstac in its own venv (.venv-pgstac) and
#                                Chromium + chromedriver (apt) for the UI browser test
# A GPU user installs the CUDA torch build of their choice into .venv before running this
# (or sets GEOXAI_TORCH_SPEC, e.g. "torch==2.13.0 --index-url <their CUDA index>").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

quiet_pip() { # pip's find-links warnings are noise here; keep errors
  "$@" 2>&1 | grep -v -E "is ignored: it is neither a file nor a directory" || return "${PIPESTATUS[0]}"
}

if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.geoxai-installed
want_hash=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want_hash" ]]; then
  echo "[setup] installing Python packages into .venv (first time ~2-3 min)"
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086
    quiet_pip .venv/bin/pip install -q ${GEOXAI_TORCH_SPEC:-torch==2.13.0}
  fi
  quiet_pip .venv/bin/pip install -q -e ".[dev]"
  echo "$want_hash" > $stamp
fi

# the viewer's web map library (Leaflet, pinned in package-lock.json), served by `geoxai view`
# itself so the page never loads anything from the internet
web=pipelines/viewer/web
if [[ ! -f $web/node_modules/leaflet/dist/leaflet.js ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "[setup] installing Node.js + npm (apt; the viewer's Leaflet comes from npm)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "[setup] installing Leaflet from npm into $web/node_modules"
  npm ci --prefix "$web" --no-audit --no-fund --silent
fi

if [[ $want_test == 1 ]]; then
  if ! dpkg -s postgresql-15-postgis-3 >/dev/null 2>&1 || ! dpkg -s postgresql-15 >/dev/null 2>&1; then
    echo "[setup] installing PostgreSQL 15 + PostGIS 3 (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-15-postgis-3 >/dev/null
  fi
  if ! dpkg -s chromium >/dev/null 2>&1 || ! dpkg -s chromium-driver >/dev/null 2>&1; then
    echo "[setup] installing headless Chromium + chromedriver (apt; the UI browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  fi
  pgstamp=.venv-pgstac/.geoxai-installed
  if [[ ! -f $pgstamp ]]; then
    echo "[setup] installing stac-fastapi-pgstac into .venv-pgstac"
    "$PY" -m venv .venv-pgstac
    quiet_pip .venv-pgstac/bin/pip install -q "stac-fastapi-pgstac>=5" "pypgstac[psycopg]>=0.9" "uvicorn>=0.30"
    touch $pgstamp
  fi
fi
echo "[setup] ready: $ROOT/.venv"

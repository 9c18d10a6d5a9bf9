#!/usr/bin/env bash
# Installs seg3d (and the Debian PACS the tests start) and runs the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/install_system.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
ruff check .
exec python -m pytest -q "$@"

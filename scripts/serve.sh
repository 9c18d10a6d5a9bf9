#!/usr/bin/env bash
# Installs seg3d, builds the sample dataset when missing and starts MONAI Label on 127.0.0.1.
# Usage: scripts/serve.sh [PORT] [extra monailabel args, e.g. --conf checkpoint model/x.pth]
# SEG3D_STUDIES=folder-or-DICOMweb-URL serves other images than the sample data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
STUDIES="${SEG3D_STUDIES:-data/sample/studies}"
[ -n "${SEG3D_STUDIES:-}" ] || python -m lib.data.build_sample --out data/sample
PORT="${1:-8000}"; shift || true
LOG_CONFIG="$(python -m lib.log_config apps/seg3d)"  # else MONAI Label leaves a copy in /tmp at every start
exec monailabel start_server --app apps/seg3d --studies "$STUDIES" --host 127.0.0.1 --port "$PORT" \
  --log_config "$LOG_CONFIG" "$@"

#!/usr/bin/env bash
# Creates .venv and installs seg3d's requirements (CPU torch, no torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.seg3d-requirements
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  # monailabel's own dependency list pulls torchvision, sam2, itk and mlflow (several GB, a CUDA torch);
  # the app needs none of them, so it is installed without dependencies on top of requirements.txt.
  .venv/bin/pip install -q --disable-pip-version-check --no-deps monailabel==0.8.5
  cp requirements.txt "$stamp"
fi

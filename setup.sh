#!/usr/bin/env bash
# Fresh machine -> kquant installed in .venv, test data in place, and the bundled example run once.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,openvino]"  # OpenVINO: the optional runtime its export tests use
.venv/bin/python -m pip install -q --no-deps -r requirements-data.txt
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null
  else
    echo "setup.sh: Fashion-MNIST is missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi
.venv/bin/python examples/quickstart.py

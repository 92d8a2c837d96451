#!/usr/bin/env bash
# Optional peer library for benchmarks/bench_adaptation.py (the "pytorch-adapt ... (peer)" rows).
# Benchmark-only: never a dependency of the package. Idempotent; installs into $VENV (default .venv).
#
# Everything goes in with --no-deps: pytorch-adapt and pytorch-metric-learning 1.6.3 both require
# torchvision, which has no CPU wheel here and would pull a newer CUDA torch. The torch already in
# the venv is kept (checked below); torchmetrics' own needs (numpy, packaging) are there already.
# torchmetrics 0.9 imports pkg_resources, which setuptools 81 removed: hence setuptools < 81
# (>= 77 is what pyproject.toml builds with).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${VENV:-.venv}/bin/python"
torch_version() { "$PY" -c "import torch; print(torch.__version__)"; }

before=$(torch_version)
"$PY" -m pip install --no-deps "pytorch-adapt==0.0.83" "torchmetrics==0.9.3" "pytorch-metric-learning==1.6.3"
"$PY" -m pip install --no-deps "setuptools>=77,<81"
after=$(torch_version)
if [ "$before" != "$after" ]; then
  echo "install_peer.sh: torch changed from $before to $after; reinstall $before" >&2
  exit 1
fi
"$PY" -W ignore -c "import pytorch_adapt.adapters, pytorch_adapt.layers, pytorch_adapt.models, torch
print('pytorch-adapt', __import__('pytorch_adapt').__version__, 'ready; torch', torch.__version__)"

#!/usr/bin/env bash
# The README's test command: install what is missing (scripts/setup.sh), then run the test
# suite under a virtual display. Extra arguments go to pytest (e.g. -k picks, --runslow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export QT_API=pyqt6
export NAPARI_ASYNC=0
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ -n "${DISPLAY:-}" ] && [ "${CRYO_OPENSET_USE_XVFB:-1}" = "0" ]; then
  exec .venv/bin/python -m pytest "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"

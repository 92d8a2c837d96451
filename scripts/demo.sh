#!/usr/bin/env bash
# The README's demo command: install what is missing (scripts/setup.sh), then run the demo on
# the built-in sample. With a display it opens napari; without one (a server, CI) it renders
# the viewer on a virtual display and saves a screenshot to demo_output/demo.png.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export QT_API=pyqt6
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  exec .venv/bin/napari-cryo-openset demo -o demo_output "$@"
fi
exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/napari-cryo-openset demo -o demo_output \
  --screenshot demo_output/demo.png "$@"

#!/usr/bin/env bash
# Install everything the project needs into ./.venv (idempotent; fast when nothing changed).
#
#   1. Debian packages for a virtual display and software OpenGL (xvfb, Mesa, Qt's xcb libs),
#      when running as root (or with sudo) and they are missing.
#   2. A virtual environment in .venv with torch==2.13.0 installed FIRST and pinned (an
#      unpinned torch pulls gigabytes of CUDA wheels; GPU users install their CUDA build of
#      torch into the venv before running this script and it is kept).
#   3. The package itself, editable, with the 'testing' extra.
#
# A stamp file records what was installed; a second run with the same pyproject.toml and
# this script skips pip entirely.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
APT_PACKAGES="xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-render-util0 libxcb-image0 \
libfontconfig1 libdbus-1-3"

log() { echo "[setup] $*" >&2; }

# 1. system packages -------------------------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
      log "installing Debian packages: ${missing[*]}"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      log "warning: missing Debian packages (${missing[*]}); GUI tests need them"
    fi
  fi
fi

# 2. virtual environment ---------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import napari_cryo_openset" 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check --no-input)
"${PIP[@]}" install -q --upgrade pip "setuptools>=77" wheel 2>&1 | grep -v "^WARNING: Location" || true
if ! "$PY" -c "import torch" 2>/dev/null; then
  log "installing $TORCH_SPEC (first, pinned)"
  "${PIP[@]}" install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
fi
"$PY" -c "import torch" || { log "error: torch could not be installed"; exit 1; }

# 3. the package -------------------------------------------------------------------------------
log "installing napari-cryo-openset (editable) with test extras"
"${PIP[@]}" install -q -e ".[testing]" 2>&1 | grep -v "^WARNING: Location" || true
"$PY" -c "import napari_cryo_openset, napari, pytest" || { log "error: install failed"; exit 1; }
echo "$want" > "$stamp"
log "done: $("$PY" -c 'import torch, napari; print(f"torch {torch.__version__}, napari {napari.__version__}")')"

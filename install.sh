#!/usr/bin/env bash
# Sets up a fresh machine for comsl: system packages, a virtual environment in .venv,
# torch pinned FIRST (an open range would pull a multi-GB CUDA build), then the package.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v espeak-ng >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export DS_BUILD_OPS=0
# pip, printing only what matters (this machine's pip config names local indexes that may not exist,
# and pip warns about each); on failure everything is shown.
pip_install() {
  local log; log=$(mktemp)
  if ! pip install -q "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
}
if ! python -c "import torch" 2>/dev/null; then
  pip_install "torch==${COMSL_TORCH_VERSION:-2.13.0}"
fi
if ! python -c "import comsl, deepspeed, pytest, django, polib" 2>/dev/null || [ pyproject.toml -nt .venv/.comsl-installed ]; then
  pip_install -e ".[dev]"
  touch .venv/.comsl-installed
fi

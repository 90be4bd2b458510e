#!/usr/bin/env bash
# What tests/test_browser.py needs in CI: Debian's chromium and its chromedriver (apt), and selenium
# (already installed from requirements.txt). .ci/run calls this after `jupyter-book build -W .` and
# before pytest; the browser test then checks every page of that build with the network off.
# Under CI=true the browser test fails (rather than skips) when these are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q chromium chromium-driver
fi
chromium --version 2>/dev/null | head -1
chromedriver --version | head -1
python -c "import selenium; print('selenium', selenium.__version__)"
test -f _build/html/index.html || { echo "ci_browser.sh: build the book first (jupyter-book build -W .)" >&2; exit 1; }

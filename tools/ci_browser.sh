#!/usr/bin/env bash
# What tests/test_browser.py needs in CI: Debian's chromium and its chromedriver (apt), the fonts of
# the font set the test must run ($NNBOOK_FONT_SET, default "dejavu": DejaVu only, what a fresh Debian
# has and the hardest case, see tools/fonts/fontsets.py), and selenium (already installed from
# requirements.txt). .ci/run calls this after `jupyter-book build -W .` and before pytest; the browser
# test then checks every page of that build with the network off, under each font set whose fonts are
# installed (the other sets skip). Under CI=true the browser test fails (rather than skips) when
# Chromium, chromedriver or the fonts of $NNBOOK_FONT_SET are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

FONT_SET="${NNBOOK_FONT_SET:-dejavu}"
FONT_PACKAGES="$(python tools/fonts/fontsets.py packages "$FONT_SET")"   # fails on an unknown set
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1 \
   || ! python tools/fonts/fontsets.py check "$FONT_SET" >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # no recommends: chromium-common recommends fonts-liberation, which a DejaVu-only machine lacks
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fontconfig $FONT_PACKAGES
fi
chromium --version 2>/dev/null | head -1
chromedriver --version | head -1
python -c "import selenium; print('selenium', selenium.__version__)"
python tools/fonts/fontsets.py check "$FONT_SET"   # prints the set's font folders, or what is missing
test -f _build/html/index.html || { echo "ci_browser.sh: build the book first (jupyter-book build -W .)" >&2; exit 1; }

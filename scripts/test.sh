#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it all.
# Debian packages: a real headless browser for the UI tests, a real Redis for the
# Celery deployment tests. Python packages: requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v redis-server >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver redis-server >/dev/null
fi
python3 -m pip install -q -r requirements-dev.txt
exec python3 -m pytest --headless "$@"

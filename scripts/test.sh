#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, then run it all.
# Debian packages: a real headless browser for the UI tests, a real Redis for the
# Celery deployment tests; podman (with runc, mmdebstrap and a local stand-in for the
# image's base, made by ../shared/tools/local-python-base.sh) and name resolution between
# compose services for tests/deploy/test_image.py. Python packages: requirements-dev.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v redis-server >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver redis-server >/dev/null
fi
export CONTAINERS_CONF=${CONTAINERS_CONF:-/tmp/containers.conf}
if [ -f ../shared/tools/local-python-base.sh ]; then
  # A failure here only makes test_image.py skip, with the reason.
  $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" bash ../shared/tools/local-python-base.sh >/dev/null \
    || echo "warning: podman or the local base image is not available: tests/deploy/test_image.py will skip" >&2
  # Compose services find each other by name: CNI's dnsname plugin (podman 4, Debian 12),
  # aardvark-dns (netavark, later releases).
  dns=golang-github-containernetworking-plugin-dnsname
  apt-cache show "$dns" >/dev/null 2>&1 || dns=aardvark-dns
  dpkg -s "$dns" >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$dns" >/dev/null \
    || echo "warning: $dns is not installed: the compose test may fail to resolve service names" >&2
fi
python3 -m pip install -q -r requirements-dev.txt
exec python3 -m pytest --headless "$@"

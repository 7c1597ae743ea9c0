#!/usr/bin/env bash
# Installs what keygate's tests need from Debian's packages: redis-server (for the shared
# rate limiter) and redis-sentinel (make test-ha: Redis Sentinel failover). The tests
# start their own servers on loopback; the packages' own services are not used.
set -euo pipefail
if command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install redis-server" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing redis-server redis-sentinel" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends redis-server redis-sentinel >/dev/null
# Debian starts the packaged service; the tests run their own servers, so stop it.
$sudo service redis-server stop >/dev/null 2>&1 || true
$sudo service redis-sentinel stop >/dev/null 2>&1 || true

#!/usr/bin/env bash
# Installs what keygate's tests need from Debian's packages: redis-server (for the shared
# rate limiter) and postgresql (for the shared usage store). The tests start their own
# redis-server and PostgreSQL clusters on loopback; the packages' own services are not
# used.
set -euo pipefail
pkgs=()
command -v redis-server >/dev/null || pkgs+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || pkgs+=(postgresql)
if [ ${#pkgs[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install ${pkgs[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${pkgs[*]}" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${pkgs[@]}" >/dev/null
# Debian starts the packaged services; the tests run their own servers, so stop them.
$sudo service redis-server stop >/dev/null 2>&1 || true
$sudo service postgresql stop >/dev/null 2>&1 || true

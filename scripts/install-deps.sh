#!/usr/bin/env bash
# Installs what keygate's tests need from Debian's packages:
#   redis-server                  the shared rate limiter (the tests start their own servers)
#   redis-sentinel                make test-ha: Redis Sentinel failover
#   buildah, podman, runc         make image and the test that runs the image
#   systemd (systemd-analyze)     the systemd unit's check
#   curl                          make dev's printed commands, the demo test
#   postgresql                    the shared usage store's tests (they start their own clusters)
#   chromium, fonts-dejavu-core   the operator console's browser test (headless) and its screenshots
# The packages' own services are not used.
set -euo pipefail
want=()
command -v redis-server >/dev/null || want+=(redis-server)
command -v redis-sentinel >/dev/null || want+=(redis-sentinel)
command -v buildah >/dev/null || want+=(buildah)
command -v podman >/dev/null || want+=(podman)
command -v runc >/dev/null || want+=(runc)
command -v systemd-analyze >/dev/null || want+=(systemd)
command -v curl >/dev/null || want+=(curl)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || want+=(postgresql)
command -v chromium >/dev/null || want+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || want+=(fonts-dejavu-core)
[ ${#want[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install ${want[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${want[*]}" >&2
$sudo apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null
# Debian starts the packaged service; the tests run their own servers, so stop it.
$sudo service redis-server stop >/dev/null 2>&1 || true
$sudo service redis-sentinel stop >/dev/null 2>&1 || true
$sudo service postgresql stop >/dev/null 2>&1 || true

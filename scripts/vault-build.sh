#!/usr/bin/env bash
# Builds the pinned Vault (v1.21.0, -tags minimal) from the Go module proxy, once per machine.
# Prints the binary's path on stdout; progress goes to stderr.
#
# The binary is cached outside the work tree (KEYGATE_CACHE, default ~/.cache/keygate) so every
# clone on this machine shares it. The first build downloads about 3 GB of modules and takes
# several minutes on 2 cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=v1.21.0
cache=${KEYGATE_CACHE:-$HOME/.cache/keygate}
bin="$cache/vault-$version/vault"

if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache/vault-$version"
exec 9>"$cache/vault-$version/.lock"
if ! flock -n 9; then
  echo "vault-build: another Vault build is running on this machine; waiting for it" >&2
  flock 9
fi
# Another build may have finished while we waited for the lock.
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

start=$(date +%s)
echo "vault-build: building Vault $version (first time on this machine; several minutes)" >&2
cd "$here/vault"
echo "vault-build: downloading modules" >&2
go mod download -x 2>&1 | awk '/^# get .*200 OK/ { n++; if (n % 200 == 0) printf "vault-build: %d module files fetched\n", n > "/dev/stderr" }'
echo "vault-build: compiling (go build -tags minimal)" >&2
(
  while sleep 30; do echo "vault-build: still compiling, $(( $(date +%s) - start ))s elapsed" >&2; done
) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
go build -trimpath -tags minimal -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
echo "vault-build: done in $(( $(date +%s) - start ))s: $("$bin" version)" >&2
echo "$bin"

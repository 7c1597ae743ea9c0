#!/usr/bin/env bash
# Builds keygate's container image (deploy/Containerfile) with buildah into an OCI archive:
# dist/keygate-VERSION.oci.tar (OUT overrides), image name keygate:VERSION. Needs buildah
# (Debian: apt-get install buildah). No registry is used: the base image is scratch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
out=${OUT:-dist/keygate-$version.oci.tar}
roots=${CA_ROOTS:-/etc/ssl/certs/ca-certificates.crt}

command -v buildah >/dev/null || { echo "image: buildah is not installed (Debian: apt-get install buildah)" >&2; exit 1; }
[ -f "$roots" ] || { echo "image: no CA roots at $roots (Debian: apt-get install ca-certificates; or set CA_ROOTS)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
echo "image: building the static keygate $version" >&2
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/keygate" ./cmd/keygate
cp "$roots" "$ctx/ca-certificates.crt"
chmod 0755 "$ctx/keygate"
chmod 0644 "$ctx/ca-certificates.crt"
echo "image: buildah bud -> $out" >&2
mkdir -p "$(dirname "$out")"
rm -f "$out"
# chroot isolation: builds inside unprivileged containers and CI runners too.
id=$(buildah bud --quiet --isolation chroot --layers=false -f deploy/Containerfile -t "keygate:$version" "$ctx")
buildah push --quiet "$id" "oci-archive:$out:keygate:$version"
buildah rmi "keygate:$version" >/dev/null 2>&1 || true
echo "image: keygate:$version in $out ($(du -h "$out" | cut -f1))" >&2
echo "$out"

#!/bin/sh
# deploy/base-image.sh - make sure the base image deploy/Dockerfile names,
# debian:bookworm-slim, exists in the local Docker engine.
#
#   deploy/base-image.sh            build it only if the tag is missing
#   deploy/base-image.sh --force    rebuild it
#
# Where a registry is reachable `docker pull debian:bookworm-slim` does the
# same job and this script is not needed. Without one (an air-gapped
# machine, CI without registry access) it builds an equivalent image from
# Debian's package mirror: a minbase debootstrap of bookworm, imported
# under that tag, so the Dockerfile stays the one users build anywhere.
# Needs root (debootstrap); installs debootstrap with apt-get if missing.
# DMP_DEBIAN_MIRROR overrides the mirror.
set -eu

tag=debian:bookworm-slim
mirror=${DMP_DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${1:-}" != --force ] && docker image inspect "$tag" >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "base-image: building $tag with debootstrap needs root" \
         "(or: docker pull $tag)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "base-image: installing debootstrap" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends debootstrap >&2
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/dmp-rootfs.XXXXXX")
trap 'rm -rf "$dir"' EXIT INT TERM

echo "base-image: debootstrap bookworm into $dir (a few minutes the first time)" >&2
debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$dir.log" 2>&1 || {
    tail -20 "$dir.log" >&2
    rm -f "$dir.log"
    echo "base-image: debootstrap failed" >&2
    exit 1
}
rm -f "$dir.log"

# Slim it as the official -slim image is: no apt lists, no caches, no
# documentation; apt told not to keep downloaded packages.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
       "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc/* \
       "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log
# The official image's sources: bookworm, its updates and security.
rm -f "$dir/etc/apt/sources.list"
cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$dir/etc/apt/apt.conf.d/90dmp-slim"
printf 'Binary::apt::APT::Keep-Downloaded-Packages "false";\n' \
    >"$dir/etc/apt/apt.conf.d/docker-clean"

tar -C "$dir" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$tag" >/dev/null
echo "base-image: $tag imported" >&2

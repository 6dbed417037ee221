#!/bin/sh
# A base image for deploy/images/Dockerfile where no image registry can be reached: a
# Debian bookworm root made by debootstrap (Debian's python3 and pip), committed with
# buildah (vfs storage: no container engine, daemon or registry needed). As root, on
# Debian: apt-get install buildah debootstrap; then, from the repository root:
#   sh deploy/images/debian-base.sh                 # localhost/gpuyard-base:bookworm
#   buildah bud --isolation chroot --build-arg BASE=localhost/gpuyard-base:bookworm \
#       -f deploy/images/Dockerfile -t ghcr.io/gpuyard/gpuyard:0.1.0 .
set -eu
export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
name="${1:-localhost/gpuyard-base:bookworm}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates,nftables,iproute2 bookworm "$root"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
ctr="$(buildah from scratch)"
buildah copy "$ctr" "$root" / >/dev/null
# Debian marks its python3 as the system's (PEP 668): the image's pip installs beside it.
buildah config --env PIP_BREAK_SYSTEM_PACKAGES=1 --cmd '["python3"]' "$ctr"
buildah commit --rm "$ctr" "$name"

#!/usr/bin/env bash
# A Debian base image with python3, made on this machine from Debian's packages, for building the Containerfile
# where no container registry can be reached (the tests do; elsewhere the Containerfile's default base serves):
# mmdebstrap makes a minimal root filesystem, `podman import` turns it into the image BASE_IMAGE. The root
# filesystem is kept as a tarball (ROOTFS) and the image in podman's storage, so later runs on this machine
# reuse them: the first run takes about a minute, the next ones nothing.
#
#   BASE_IMAGE=localhost/limner-base:bookworm   the image to make (nothing happens when it exists)
#   ROOTFS=build/image/bookworm-rootfs.tar      the cached root filesystem
#   SUITE=bookworm                              the Debian release (its python3 must match the torch wheel)
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${BASE_IMAGE:-localhost/limner-base:bookworm}
suite=${SUITE:-bookworm}
rootfs=${ROOTFS:-build/image/$suite-rootfs.tar}

if podman image exists "$image"; then
  exit 0
fi
if [[ ! -s "$rootfs" ]]; then
  mkdir -p "$(dirname "$rootfs")"
  # minbase: dpkg, apt, bash, coreutils, passwd (useradd); python3-venv brings pip for the image's venv.
  # Documentation and apt's lists are left out: they only make the image bigger.
  mmdebstrap --variant=minbase --format=tar --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$suite" "$rootfs.partial"
  mv "$rootfs.partial" "$rootfs"
fi
podman import --change 'CMD ["/bin/bash"]' "$rootfs" "$image" >/dev/null

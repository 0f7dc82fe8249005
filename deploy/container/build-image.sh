#!/usr/bin/env bash
# Build the Containerfile with buildah (`make image`). This machine's pip settings reach the build through a
# pip.conf mounted at /etc/pip.conf: its CA bundle (for networks that inspect TLS) and, when a torch wheel lies
# in one of its find-links folders, that folder mounted at /wheels and named as torch's source, so the image
# installs the same file instead of downloading it again.
#
#   IMAGE=limner:latest        the tag to build
#   DEPS_IMAGE=limner-deps:latest  the dependencies' stage, tagged too: `podman image prune` keeps a tagged
#                              image, so the next build still finds that layer (minutes) in its cache
#   IMAGE_BASE=...             the base image (the Containerfile's BASE: python:3.11-slim by default)
#   IMAGE_ARGS="..."           more buildah arguments (--build-arg TORCH=..., --build-arg EXTRAS=...)
set -euo pipefail
cd "$(dirname "$0")/../.."

pip_setting() {  # the pip option $1 from the environment or pip's own configuration, empty if unset
  local variable="PIP_$(tr 'a-z-' 'A-Z_' <<<"$1")"
  if [[ -n "${!variable:-}" ]]; then echo "${!variable}"; return; fi
  for pip in .venv/bin/pip pip3; do
    if command -v "$pip" >/dev/null 2>&1; then "$pip" config get "global.$1" 2>/dev/null && return; fi
  done
  return 0
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
args=(--isolation chroot --format docker --layers --force-rm -f Containerfile)
[[ -n "${IMAGE_BASE:-}" ]] && args+=(--build-arg "BASE=$IMAGE_BASE")
{
  echo "[global]"
  cert=$(pip_setting cert)
  cert=${cert:-/etc/ssl/certs/ca-certificates.crt}
  if [[ -f "$cert" ]]; then
    args+=(-v "$(realpath "$cert"):/etc/pip-ca.crt:ro")
    echo "cert = /etc/pip-ca.crt"
  fi
  for links in $(pip_setting find-links); do
    if compgen -G "$links/torch-*.whl" >/dev/null; then
      args+=(-v "$(realpath "$links"):/wheels:ro" --build-arg TORCH_FIND_LINKS=/wheels)
      break
    fi
  done
} >"$work/pip.conf"
args+=(-v "$work/pip.conf:/etc/pip.conf:ro")
# shellcheck disable=SC2086  # IMAGE_ARGS is a list of words
buildah bud "${args[@]}" ${IMAGE_ARGS:-} --target deps -t "${DEPS_IMAGE:-limner-deps:latest}" .
# shellcheck disable=SC2086
buildah bud "${args[@]}" ${IMAGE_ARGS:-} -t "${IMAGE:-limner:latest}" .

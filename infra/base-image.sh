#!/usr/bin/env bash
# Build (once) a local Python base image without pulling from any container registry:
#   mmdebstrap bookworm (essential + python3 + python3-venv + ca-certificates) -> docker import
# It has a ready venv at /opt/venv (first on PATH), so a Dockerfile FROM it can `pip install` directly.
# The rootfs tarball is cached at $CACHE (zstd); the image is tagged $IMAGE and pushed to $REGISTRY.
# Idempotent (skips the steps whose result already exists) and serialized by a lock, so parallel runs
# do not build twice. Needs a Docker engine and the registry (up.sh); uses $DOCKER_HOST like the docker CLI.
set -euo pipefail
INFRA=${INFRA:-${TMPDIR:-/tmp}/sematic-k8s-infra}
IMAGE=${IMAGE:-local/python-base:bookworm}
REGISTRY=${REGISTRY:-127.0.0.1:5000}
PUSH_AS=${PUSH_AS:-$REGISTRY/python-base:bookworm}
CACHE=${CACHE:-$INFRA/cache/python-base-bookworm.tar.zst}
# The machine's own apt mirror when it has one (deb822 sources), else mmdebstrap's default.
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mkdir -p "$(dirname "$CACHE")" "$INFRA/logs"

die() { echo "base-image.sh: $*" >&2; exit 1; }
command -v docker >/dev/null || die "the docker CLI is missing (apt-get install docker.io, or install Docker)"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
  || die "no Docker engine answers on ${DOCKER_HOST:-the default socket}: run infra/up.sh first"

if command -v flock >/dev/null; then exec 9>"$INFRA/base-image.lock"; flock 9; fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  if [ ! -s "$CACHE" ]; then
    if ! command -v mmdebstrap >/dev/null || ! command -v zstd >/dev/null; then
      { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; } \
        || die "$IMAGE is missing and building it needs mmdebstrap and zstd (Debian, as root). Elsewhere, build" \
               "FROM python:3.11-slim-bookworm with a venv at /opt/venv first on PATH and tag it $IMAGE"
      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap zstd >/dev/null
    fi
    t0=$SECONDS
    mmdebstrap --variant=essential --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook='chroot "$1" python3 -m venv /opt/venv' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
      bookworm "$CACHE.tmp.tar.zst" ${MIRROR:+"$MIRROR"} >"$INFRA/logs/base-image-mmdebstrap.log" 2>&1 \
      || die "mmdebstrap failed (see $INFRA/logs/base-image-mmdebstrap.log)"
    mv "$CACHE.tmp.tar.zst" "$CACHE"
    echo "rootfs built in $((SECONDS - t0))s -> $CACHE ($(du -h "$CACHE" | cut -f1))"
  fi
  # Every import gets a new digest (the created time changes), hence the cached tarball and this check.
  zstd -dc "$CACHE" | docker import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'ENV PYTHONDONTWRITEBYTECODE=1' --change 'CMD ["python"]' \
    - "$IMAGE" >/dev/null
  echo "imported $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
fi
docker tag "$IMAGE" "$PUSH_AS"
docker push -q "$PUSH_AS" >/dev/null || die "docker push $PUSH_AS failed: is the registry on $REGISTRY up (infra/up.sh)?"
echo "base image: $IMAGE = $(docker image inspect -f '{{index .RepoDigests 0}}' "$PUSH_AS")"

#!/usr/bin/env bash
# Build the CI stand-in for the Dockerfile's base image and tag it with the EXACT name in FROM,
# so `podman build` uses it unchanged and pulls nothing.
#
# The real base (pytorch/pytorch:*-runtime, a conda image) is not pulled in CI. The stand-in is
# Debian bookworm + python3.11 in /opt/conda (where the real image keeps `python`) + the torch and
# torchvision the real base carries, read from the Dockerfile's LABEL org.amf.base.torch /
# org.amf.base.torchvision next to FROM, installed with pip from PyPI (the CUDA 12.4 builds, as in
# the real base; about 3.5 GB with their nvidia-*-cu12 libraries), the local wheel indexes as extras.
# ci/base-constraints.txt pins their dependencies. The host's extra CA certificates go into the
# stand-in only (never into git) so pip inside `podman build` reaches PyPI.
#
# Usage: ci/build_base_image.sh [--force] [--keep-rootfs]
# Env:   AMF_CI_WORK (work dir, default /var/tmp/amf-ci), DEBIAN_MIRROR
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${AMF_CI_WORK:-/var/tmp/amf-ci}"
ROOT="$WORK/rootfs"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
FORCE=0 KEEP=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --keep-rootfs) KEEP=1 ;;
    *) echo "usage: $0 [--force] [--keep-rootfs]" >&2; exit 2 ;;
  esac
done

FROM_NAME="$(awk 'toupper($1) == "FROM" { print $2; exit }' "$REPO/Dockerfile")"
[[ -n "$FROM_NAME" ]] || { echo "error: no FROM line in $REPO/Dockerfile" >&2; exit 1; }
base_label() {  # the value of LABEL org.amf.base.<name>="..." in the Dockerfile
  sed -nE "s/.*[[:space:]]org\.amf\.base\.$1=\"([^\"]+)\".*/\1/p" "$REPO/Dockerfile" | head -n 1
}
TORCH_VERSION="$(base_label torch)"
TORCHVISION_VERSION="$(base_label torchvision)"
if [[ -z "$TORCH_VERSION" || -z "$TORCHVISION_VERSION" ]]; then
  echo "error: $REPO/Dockerfile lacks LABEL org.amf.base.torch=\"...\" org.amf.base.torchvision=\"...\"" >&2
  exit 1
fi
# pytorch/pytorch:<torch>-cuda...: the label must name the torch of the FROM tag
case "$FROM_NAME" in
  pytorch/pytorch:*|*/pytorch/pytorch:*)
    tag="${FROM_NAME##*:}"
    if [[ "${tag%%-*}" != "$TORCH_VERSION" ]]; then
      echo "error: FROM $FROM_NAME carries torch ${tag%%-*}, but LABEL org.amf.base.torch says $TORCH_VERSION" >&2
      exit 1
    fi ;;
esac
for pkg in torch torchvision; do
  want="$([[ $pkg == torch ]] && echo "$TORCH_VERSION" || echo "$TORCHVISION_VERSION")"
  grep -qixF "$pkg==$want" "$REPO/ci/base-constraints.txt" || {
    echo "error: ci/base-constraints.txt does not pin $pkg==$want (regenerate it; see its header)" >&2; exit 1; }
done
# podman stores a Docker Hub name fully qualified; tag it that way so FROM finds it locally
case "${FROM_NAME%%/*}" in
  *.*|*:*|localhost) TAG="$FROM_NAME" ;;
  *) TAG="docker.io/$FROM_NAME" ;;
esac

if [[ $FORCE == 0 ]] && podman image exists "$TAG"; then
  standin="$(podman image inspect --format '{{ index .Labels "org.amf.ci.standin" }}' "$TAG" 2>/dev/null || true)"
  have="$(podman image inspect --format '{{ index .Labels "org.amf.base.torch" }}' "$TAG" 2>/dev/null || true)"
  if [[ "$standin" != 1 || "$have" == "$TORCH_VERSION" ]]; then
    echo "base image $TAG already present (use --force to rebuild)"
    exit 0
  fi
  echo "stand-in $TAG carries torch ${have:-of unknown version}, the Dockerfile's base $TORCH_VERSION: rebuilding it"
fi

for tool in debootstrap podman chroot; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install -y podman debootstrap)" >&2; exit 1; }
done
[[ $EUID == 0 ]] || { echo "error: debootstrap and chroot need root" >&2; exit 1; }

MOUNTS=()
cleanup() {
  local i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  if [[ $KEEP == 0 ]]; then rm -rf "$ROOT"; fi
}
trap cleanup EXIT

bind() {  # bind <host path> <path in rootfs> [ro]
  mkdir -p "$ROOT$2"
  mount --bind "$1" "$ROOT$2"
  MOUNTS+=("$ROOT$2")
  if [[ "${3:-}" == ro ]]; then mount -o remount,bind,ro "$ROOT$2"; fi
}

# A clean environment: the host's PIP_* variables point at paths the rootfs does not have.
in_root() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

rm -rf "$ROOT"
mkdir -p "$WORK"
echo "== debootstrap bookworm into $ROOT"
# debootstrap does not resolve python3.11-venv's virtual python3.11-distutils; name its provider.
debootstrap --variant=minbase --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }

cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi
in_root update-ca-certificates >/dev/null
# pip in a venv uses certifi's bundle, not the system store; point it at the system store.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ndisable-pip-version-check = true\n' >"$ROOT/etc/pip.conf"

bind /proc /proc
bind /dev /dev
for index in /opt/pypi /opt/pypi-more; do
  if [[ -d "$index" ]]; then bind "$index" "$index" ro; fi
done
cp "$REPO/ci/base-constraints.txt" "$ROOT/tmp/base-constraints.txt"

echo "== python3.11 venv at /opt/conda + torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
in_root python3.11 -m venv /opt/conda
extra=()
for index in /opt/pypi /opt/pypi-more; do
  if [[ -d "$index/simple" ]]; then extra+=(--extra-index-url "file://$index/simple"); fi
done
in_root /opt/conda/bin/pip install --no-cache-dir --progress-bar off "${extra[@]}" \
  -c /tmp/base-constraints.txt "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
  >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log" >&2; exit 1; }
in_root python -c "
import sys, torch, torchvision
print('torch', torch.__version__, 'torchvision', torchvision.__version__)
got = (torch.__version__.split('+')[0], torchvision.__version__.split('+')[0])
sys.exit(None if got == tuple(sys.argv[1:3]) else f'error: installed {got}, the Dockerfile names {sys.argv[1:3]}')
" "$TORCH_VERSION" "$TORCHVISION_VERSION"

for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount -l "${MOUNTS[$i]}"; done
MOUNTS=()
rm -rf "$ROOT/tmp/"* "$ROOT/var/cache/apt/archives/"*.deb "$ROOT/var/lib/apt/lists/"* "$ROOT/root/.cache"

echo "== podman import as $TAG"
tar -C "$ROOT" --numeric-owner --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -cf - . \
  | podman import \
      --change 'ENV PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python"]' \
      --change "LABEL org.amf.ci.standin=1 org.amf.base.torch=$TORCH_VERSION org.amf.base.torchvision=$TORCHVISION_VERSION" \
      --message "CI stand-in for $FROM_NAME: Debian bookworm + torch $TORCH_VERSION (CPU use only)" \
      - "$TAG" >/dev/null
podman run --rm --network none "$TAG" python -c "import sys, torch; print(sys.executable, torch.__version__)"
echo "base image ready: $TAG ($(podman image inspect --format '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}'))"

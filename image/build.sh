#!/usr/bin/env bash
# Build the tokenfleet operator image without a Docker daemon or a container registry:
#
#   1. base:  a Debian bookworm root (debootstrap --variant=minbase + python3, python3-venv) from
#             Debian's apt mirror, cached as a tarball keyed by its recipe;
#   2. deps:  `python3 -m venv /opt/tokenfleet` + `pip install --require-hashes --no-deps -r
#             requirements.lock` from PyPI, run inside the image (buildah run, chroot isolation);
#             cached by the base key and the lock file's hash;
#   3. app:   the tokenfleet wheel, built from the tracked files of the image context only
#             (pyproject.toml, README.md, operator/; see .dockerignore), installed on top;
#             OCI labels (source, version, revision, created...), non-root user, entrypoint;
#   4. smoke: `tokenfleet --version` and `pip check` run inside the built image (once per image);
#   5. out:   an OCI archive (`buildah push ... oci-archive:`), written to $IMAGE_DIR/tokenfleet.oci.tar
#             plus $IMAGE_DIR/image.json (name, size, layers, build seconds).
#
# buildah (Debian's 1.28) runs with the vfs storage driver and chroot isolation, so it needs no
# overlay mount, no OCI runtime and no daemon; it needs root (CI runs as root). The layers are
# exactly base / deps / app, in that order. The Dockerfile describes the same image for hosts
# with a registry.
#
# Usage: image/build.sh            (IMAGE_DIR defaults to .cache/image)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
IMAGE_DIR="${IMAGE_DIR:-$REPO/.cache/image}"
SUITE="${IMAGE_SUITE:-bookworm}"
MIRROR="${IMAGE_MIRROR:-http://deb.debian.org/debian}"
PACKAGES="python3,python3-venv,ca-certificates"
SOURCE="${IMAGE_SOURCE:-https://github.com/tokenfleet/tokenfleet}"
mkdir -p "$IMAGE_DIR"
IMAGE_DIR="$(cd "$IMAGE_DIR" && pwd)"
started=$(date +%s)

for tool in debootstrap buildah git; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "image/build.sh: '$tool' is missing (apt-get install -y debootstrap buildah)" >&2
    exit 2
  }
done
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=IMAGE_DIR,IMAGE_SUITE,IMAGE_MIRROR,IMAGE_SOURCE,PYTHON,PIP_CERT,SSL_CERT_FILE "$0" "$@"
  fi
  echo "image/build.sh: needs root (debootstrap, and buildah's chroot isolation)" >&2
  exit 2
fi

B=(buildah --root "$IMAGE_DIR/storage" --runroot "$IMAGE_DIR/run" --storage-driver vfs)
RUN=(run --isolation chroot --network host)
# pip inside the image trusts what the host trusts (a TLS-inspecting egress proxy's CA, say) for
# the build only: the host's bundle is bind-mounted for the pip steps and never stored in a layer
HOST_CA="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
PIP_RUN=("${RUN[@]}" --env PIP_NO_CACHE_DIR=1 --env PIP_DISABLE_PIP_VERSION_CHECK=1)
if [ -s "$HOST_CA" ]; then
  PIP_RUN+=(--volume "$HOST_CA:/run/build-ca.pem:ro" --env PIP_CERT=/run/build-ca.pem)
fi
# the (empty) mount point the bind mount leaves behind
unmark() { rm -f "$("${B[@]}" mount "$1")/run/build-ca.pem"; "${B[@]}" umount "$1" >/dev/null; }
sha() { sha256sum | cut -c1-16; }
exists() { "${B[@]}" inspect --type image "$1" >/dev/null 2>&1; }
log() { printf '>> image: %s\n' "$*"; }

# ---- 1. base --------------------------------------------------------------------------------
BASE_RECIPE="debootstrap --variant=minbase --include=$PACKAGES $SUITE $MIRROR; user 1000; trimmed v1"
BASE_KEY="$(printf '%s' "$BASE_RECIPE" | sha)"
BASE_TAR="$IMAGE_DIR/base-$BASE_KEY.tar"
if [ ! -s "$BASE_TAR" ]; then
  log "debootstrap $SUITE (minbase + $PACKAGES) from $MIRROR"
  root="$(mktemp -d "$IMAGE_DIR/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
    >"$IMAGE_DIR/debootstrap.log" 2>&1 || {
    tail -20 "$IMAGE_DIR/debootstrap.log" >&2
    exit 1
  }
  chroot "$root" useradd --uid 1000 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin tokenfleet
  # what a container never uses: apt lists and caches, docs, man pages, locales
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/* "$root"/tmp/* "$root"/dev/* "$root"/proc/* \
    "$root"/sys/*
  tar --numeric-owner --xattrs -C "$root" -cf "$BASE_TAR.part" .
  mv "$BASE_TAR.part" "$BASE_TAR"
  rm -rf "$root"
  trap - EXIT
fi
BASE_IMAGE="localhost/tokenfleet-base:$BASE_KEY"
if ! exists "$BASE_IMAGE"; then
  log "base layer from $(basename "$BASE_TAR")"
  c="$("${B[@]}" from scratch)"
  tar --numeric-owner --xattrs -C "$("${B[@]}" mount "$c")" -xf "$BASE_TAR"
  "${B[@]}" umount "$c" >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --created-by "debootstrap $SUITE minbase: $PACKAGES" "$c"
  "${B[@]}" commit --quiet --rm --format oci "$c" "$BASE_IMAGE" >/dev/null
fi

# ---- 2. dependencies ------------------------------------------------------------------------
DEPS_KEY="$( (echo "$BASE_KEY"; cat requirements.lock) | sha)"
DEPS_IMAGE="localhost/tokenfleet-deps:$DEPS_KEY"
if ! exists "$DEPS_IMAGE"; then
  log "dependency layer: pip install -r requirements.lock (hash-checked) in the image"
  c="$("${B[@]}" from "$BASE_IMAGE")"
  "${B[@]}" copy --quiet "$c" requirements.lock /tmp/requirements.lock
  "${B[@]}" "${PIP_RUN[@]}" "$c" -- \
    sh -c 'python3 -m venv /opt/tokenfleet \
      && /opt/tokenfleet/bin/pip install --quiet --require-hashes --no-deps -r /tmp/requirements.lock \
      && rm -f /tmp/requirements.lock'
  unmark "$c"
  "${B[@]}" config --created-by "pip install --require-hashes --no-deps -r requirements.lock" "$c"
  "${B[@]}" commit --quiet --rm --format oci "$c" "$DEPS_IMAGE" >/dev/null
fi

# ---- 3. application -------------------------------------------------------------------------
# the build context: tracked files of the paths .dockerignore lets in, nothing else
CONTEXT_PATHS=(pyproject.toml README.md operator)
REVISION="$(git rev-parse HEAD)"
if [ -n "$(git status --porcelain -- "${CONTEXT_PATHS[@]}" requirements.lock)" ]; then
  REVISION="$REVISION-dirty"
fi
VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
APP_KEY="$( (echo "$DEPS_KEY $REVISION $SOURCE"; git ls-files -s -- "${CONTEXT_PATHS[@]}";
  git diff HEAD -- "${CONTEXT_PATHS[@]}") | sha)"
APP_IMAGE="localhost/tokenfleet:$VERSION-$APP_KEY"
CREATED="$(git log -1 --format=%cI HEAD)"
if ! exists "$APP_IMAGE"; then
  log "application layer: tokenfleet $VERSION ($REVISION)"
  ctx="$(mktemp -d "$IMAGE_DIR/context.XXXXXX")"
  trap 'rm -rf "$ctx"' EXIT
  git ls-files -z -- "${CONTEXT_PATHS[@]}" | xargs -0 cp --parents -t "$ctx"
  "${PYTHON:-python3}" -m pip wheel --quiet --no-deps --wheel-dir "$ctx/dist" "$ctx" >/dev/null
  c="$("${B[@]}" from "$DEPS_IMAGE")"
  wheel="$(basename "$ctx"/dist/*.whl)"
  "${B[@]}" copy --quiet "$c" "$ctx/dist/$wheel" "/tmp/$wheel"
  "${B[@]}" "${PIP_RUN[@]}" "$c" -- \
    sh -c "/opt/tokenfleet/bin/pip install --quiet --no-deps /tmp/$wheel && rm -f /tmp/$wheel"
  unmark "$c"
  rm -rf "$ctx"
  trap - EXIT
  "${B[@]}" config \
    --created-by "pip install --no-deps tokenfleet-$VERSION wheel" \
    --label org.opencontainers.image.title=tokenfleet \
    --label "org.opencontainers.image.description=Kubernetes operator: factory immersion racks and parked EVs as one Triton inference fleet" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.version=$VERSION" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.source=$SOURCE" \
    --label "org.opencontainers.image.created=$CREATED" \
    --label "org.opencontainers.image.base.name=debian:$SUITE (debootstrap minbase)" \
    --env PATH=/opt/tokenfleet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PYTHONDONTWRITEBYTECODE=1 \
    --user 1000:1000 --workingdir / --port 8080 --port 9090 \
    --entrypoint '["tokenfleet"]' \
    --cmd 'run --all-namespaces --liveness=http://0.0.0.0:8080/healthz' \
    "$c"
  "${B[@]}" commit --quiet --rm --format oci "$c" "$APP_IMAGE" >/dev/null
fi

# ---- 4. smoke: the built image runs (once per image) -------------------------------------------
if [ "$(cut -f1 "$IMAGE_DIR/smoke.txt" 2>/dev/null)" = "$APP_IMAGE" ]; then
  smoke="$(cut -f2 "$IMAGE_DIR/smoke.txt")"
else
  c="$("${B[@]}" from "$APP_IMAGE")"
  trap '"${B[@]}" rm "$c" >/dev/null 2>&1 || true' EXIT
  smoke="$("${B[@]}" "${RUN[@]}" "$c" -- tokenfleet --version)"
  "${B[@]}" "${RUN[@]}" --env PIP_NO_CACHE_DIR=1 "$c" -- python -m pip check >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  trap - EXIT
  printf '%s\t%s\n' "$APP_IMAGE" "$smoke" >"$IMAGE_DIR/smoke.txt"
fi
log "smoke: tokenfleet --version -> $smoke"

# ---- 5. the OCI archive ---------------------------------------------------------------------
ARCHIVE="$IMAGE_DIR/tokenfleet.oci.tar"
if [ ! -s "$ARCHIVE" ] || [ "$(cat "$IMAGE_DIR/archive.key" 2>/dev/null)" != "$APP_IMAGE" ]; then
  rm -f "$ARCHIVE"
  "${B[@]}" push --quiet "$APP_IMAGE" "oci-archive:$ARCHIVE:tokenfleet:$VERSION"
  echo "$APP_IMAGE" >"$IMAGE_DIR/archive.key"
fi
# vfs keeps every image as a full copy: drop what an earlier build left (other keys, other code)
for stale in $("${B[@]}" images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/tokenfleet' |
  grep -vxF -e "$BASE_IMAGE" -e "$DEPS_IMAGE" -e "$APP_IMAGE" || true); do
  "${B[@]}" rmi "$stale" >/dev/null 2>&1 || true
done
for old in "$IMAGE_DIR"/base-*.tar; do
  [ "$old" = "$BASE_TAR" ] || rm -f "$old"
done
seconds=$(($(date +%s) - started))
python3 - "$IMAGE_DIR" "$APP_IMAGE" "$ARCHIVE" "$smoke" "$seconds" <<'EOF'
import json, os, sys
out, image, archive, smoke, seconds = sys.argv[1:]
summary = {
    "image": image,
    "archive": archive,
    "archive_bytes": os.path.getsize(archive),
    "smoke_version": smoke,
    "build_seconds": int(seconds),
}
with open(os.path.join(out, "image.json"), "w") as f:
    json.dump(summary, f, indent=2)
print(json.dumps(summary))
EOF

#!/usr/bin/env bash
# Build the object store for tests and `make dev`: SeaweedFS's `weed` (master + volume + filer + S3
# gateway in one process, `weed mini`) from its Go module, pinned in weed/go.mod, the way
# e2e/cluster/build.sh builds the control plane. Output: $OBJSTORE_BIN_DIR/weed (default .bin/).
# Rebuilt only when the pin (or this script) changes, tracked by $OBJSTORE_BIN_DIR/weed.stamp.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${OBJSTORE_BIN_DIR:-$root/.bin}"
mkdir -p "$bin"
bin="$(cd "$bin" && pwd)"

command -v go >/dev/null || { echo "objstore/build.sh: go is not on PATH (need go >= 1.26)" >&2; exit 1; }

exec 9>"$bin/.weed-build.lock"
flock 9

stamp_text="$(cat "$here/weed/go.mod" "$here/weed/go.sum" "$here/weed/tools.go" "$here/build.sh" | sha256sum | cut -d' ' -f1) $(go version)"
if [[ -f "$bin/weed.stamp" && "$(cat "$bin/weed.stamp")" == "$stamp_text" && -x "$bin/weed" ]]; then
  echo ">> object store binary up to date: $bin/weed"
  exit 0
fi
rm -f "$bin/weed.stamp"
jobs="${GO_BUILD_JOBS:-$(nproc)}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod -buildvcs=false"

ticker() { local t0=$SECONDS; while sleep 30 </dev/null >/dev/null 2>&1; do echo "   ... still compiling weed ($((SECONDS - t0)) s)"; done; }
ticker & ticker_pid=$!
trap 'kill "$ticker_pid" 2>/dev/null || true' EXIT

t0=$SECONDS
version="$(awk -v m=github.com/seaweedfs/seaweedfs '$1 == "require" && $2 == m {print $3; exit} $1 == m {print $2; exit}' "$here/weed/go.mod")"
echo ">> building weed (SeaweedFS S3 server) from github.com/seaweedfs/seaweedfs ${version}"
echo "   (cold: long — 61 min measured on 2 cores shared with 5 other builds; warm rebuilds only relink)"
(cd "$here/weed" && go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$bin/weed.new" github.com/seaweedfs/seaweedfs/weed)
mv -f "$bin/weed.new" "$bin/weed"
echo "$stamp_text" > "$bin/weed.stamp"
echo ">> weed ready in $bin ($((SECONDS - t0)) s, $(du -h "$bin/weed" | cut -f1))"

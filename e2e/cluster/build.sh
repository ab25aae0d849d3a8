#!/usr/bin/env bash
# Build the local control plane into .bin/ (ignored): one multi-call binary `kcp` (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl) from k8s.io/kubernetes, plus kwok and helm via
# `go install`. Every version is pinned in versions.env; the binaries are rebuilt only when the pins
# (or kcp's sources) change, tracked by .bin/stamp. Uses the default Go module/build caches
# (~/go/pkg/mod, ~/.cache/go-build) so later clones on the same machine reuse them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$root/.bin"
# shellcheck source=versions.env
source "$here/versions.env"

command -v go >/dev/null || { echo "build.sh: go is not on PATH (need go >= 1.26)" >&2; exit 1; }
command -v etcd >/dev/null || [[ -x /usr/bin/etcd ]] || {
  echo "build.sh: etcd not found; install Debian's etcd-server (apt-get install etcd-server)" >&2; exit 1; }

# one build at a time (several engineers/CI jobs may run `make e2e` at once on one machine)
mkdir -p "$bin"
exec 9>"$bin/.build.lock"
flock 9

stamp_text="$(cat "$here/versions.env" "$here/kcp/go.mod" "$here/kcp/go.sum" "$here/kcp/main.go" "$here/build.sh" | sha256sum | cut -d' ' -f1) $(go version)"
if [[ -f "$bin/stamp" && "$(cat "$bin/stamp")" == "$stamp_text" && -x "$bin/kcp" && -x "$bin/kwok" && -x "$bin/helm" && -d "$bin/kwok-stages" ]]; then
  echo ">> control plane binaries up to date in .bin/ (K8S $K8S_VERSION, kwok $KWOK_VERSION, helm $HELM_VERSION)"
  exit 0
fi
rm -f "$bin/stamp"
jobs="${GO_BUILD_JOBS:-$(nproc)}"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"
t0=$SECONDS

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$minor"

# go prints nothing while it compiles: tick every 30 s so a cold build (minutes) shows progress
ticker() { local t0=$SECONDS; while sleep 30 </dev/null >/dev/null 2>&1; do echo "   ... still compiling ($((SECONDS - t0)) s)"; done; }
ticker & ticker_pid=$!
trap 'kill "$ticker_pid" 2>/dev/null || true' EXIT

echo ">> [1/3] building kcp (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) from k8s.io/kubernetes $K8S_VERSION"
echo "   (cold: ~5 min on 2 cores for kcp, ~7.5 min for all three; warm rebuilds only relink)"
(cd "$here/kcp" && go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$bin/kcp.new" .)
mv -f "$bin/kcp.new" "$bin/kcp"
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do ln -sfn kcp "$bin/$name"; done
echo "   kcp built ($((SECONDS - t0)) s so far)"

echo ">> [2/3] go install sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
GOBIN="$bin" go install -p "$jobs" -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
echo "   kwok built ($((SECONDS - t0)) s so far)"

echo ">> [3/3] go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
GOBIN="$bin" go install -p "$jobs" -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
echo "   helm built ($((SECONDS - t0)) s total)"

# kwok's default stages (node init, heartbeat with lease, pod ready/complete/delete) from the pinned
# module; fleet.py writes them into kwok's config with the heartbeat interval it wants.
kwok_dir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
rm -rf "$bin/kwok-stages" && mkdir -p "$bin/kwok-stages"
cp "$kwok_dir/kustomize/stage/node/fast/node-initialize.yaml" \
   "$kwok_dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
   "$kwok_dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml "$bin/kwok-stages/"
chmod u+w "$bin"/kwok-stages/*.yaml

ln -sfn "$(command -v etcd || echo /usr/bin/etcd)" "$bin/etcd"
echo "$stamp_text" > "$bin/stamp"
"$bin/kubectl" version --client 2>/dev/null | head -1 || true
echo ">> control plane binaries ready in .bin/ ($((SECONDS - t0)) s)"

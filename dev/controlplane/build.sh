#!/usr/bin/env bash
# Builds the test tools from the pinned Go modules next to this script and
# caches the binaries in a directory keyed by the versions and the go.sum
# files, so a second run is a no-op. Prints the binary directory on the last
# line of stdout.
#
#   build.sh [controlplane]  etcd, kube-apiserver, kube-controller-manager and
#                            a kubectl of the same release (./etcd, ./kube)
#   build.sh node            kubelet, kube-scheduler and kube-proxy of the same
#                            release, and the Pods' sandbox program (./kube, ./pause)
#   build.sh helm            helm, for the chart tests (./helm)
#   build.sh prometheus      Prometheus, for the dashboard test (./prometheus)
#   build.sh alertmanager    Alertmanager, for the notification test (./alertmanager)
#
#   DRIFTWARDEN_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/driftwarden)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
HELM_VERSION=v3.20.2
# Prometheus v3.12.0: the Go module numbers v3.x.y as v0.3xx.y.
PROMETHEUS_VERSION=v3.12.0
PROMETHEUS_MODULE_VERSION=v0.312.0
ALERTMANAGER_VERSION=v0.31.1
target=${1:-controlplane}

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

case $target in
controlplane)
	inputs=("$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go")
	name="k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
	binaries=(kube-apiserver kube-controller-manager kubectl etcd)
	;;
node)
	inputs=("$here/kube/go.mod" "$here/kube/go.sum" "$here/pause/go.mod" "$here/pause/main.go")
	name="node-$KUBE_VERSION"
	binaries=(kubelet kube-scheduler kube-proxy pause pause.oci.tar)
	;;
helm)
	inputs=("$here/helm/go.mod" "$here/helm/go.sum")
	name="helm-$HELM_VERSION"
	binaries=(helm)
	;;
prometheus)
	inputs=("$here/prometheus/go.mod" "$here/prometheus/go.sum")
	name="prometheus-$PROMETHEUS_VERSION"
	binaries=(prometheus)
	;;
alertmanager)
	inputs=("$here/alertmanager/go.mod" "$here/alertmanager/go.sum")
	name="alertmanager-$ALERTMANAGER_VERSION"
	binaries=(alertmanager)
	;;
*)
	echo "usage: $0 [controlplane|node|helm|prometheus|alertmanager]" >&2
	exit 2
	;;
esac
key=$(cat "${inputs[@]}" | sha256sum | cut -c1-12)
cache_root=${DRIFTWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/driftwarden}
bin="$cache_root/controlplane/$name-$key"

cached=true
for binary in "${binaries[@]}"; do
	[[ -s "$bin/$binary" ]] || cached=false
done
if $cached; then
	echo "$target binaries cached in $bin" >&2
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build the $target binaries (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$bin.partial"
log="$bin.partial/build.log"

# go build prints one line per compiled package with -v; show a heartbeat
# instead of thousands of lines.
build() { # name module-dir package ldflags [build tags]
	local name=$1 dir=$2 pkg=$3 ldflags=$4 tags=${5:-} start=$SECONDS pid
	echo "building $name (a cold build takes several minutes)..." >&2
	(cd "$dir" && go build -v -trimpath -tags "$tags" -ldflags "$ldflags" -o "$bin.partial/$name" "$pkg") >>"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 20
		kill -0 "$pid" 2>/dev/null && echo "  $name: $((SECONDS - start))s, $(wc -l <"$log") packages compiled so far" >&2
	done
	if ! wait "$pid"; then
		echo "error: building $name failed; last lines of $log:" >&2
		tail -n 30 "$log" >&2
		exit 1
	fi
	echo "  $name built in $((SECONDS - start))s" >&2
}

minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
case $target in
controlplane)
	build etcd "$here/etcd" . "-s -w"
	build kube-apiserver "$here/kube" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
	build kube-controller-manager "$here/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
	build kubectl "$here/kube" k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
	;;
node)
	build kubelet "$here/kube" k8s.io/kubernetes/cmd/kubelet "$kube_ldflags"
	build kube-scheduler "$here/kube" k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
	build kube-proxy "$here/kube" k8s.io/kubernetes/cmd/kube-proxy "$kube_ldflags"
	build pause "$here/pause" . "-s -w"
	# The Pods' sandbox image (no registry to pull one from): the program
	# alone in an empty image, packed by buildah without a daemon.
	command -v buildah >/dev/null || { echo "error: buildah is required to pack the sandbox image (apt-get install buildah)" >&2; exit 1; }
	storage=$(mktemp -d)
	bh=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
	container=$("${bh[@]}" from --isolation chroot scratch)
	"${bh[@]}" copy "$container" "$bin.partial/pause" /pause >/dev/null
	"${bh[@]}" config --entrypoint '["/pause"]' --cmd '' --user 65535:65535 "$container"
	"${bh[@]}" commit -q "$container" localhost/driftwarden-pause:1 >/dev/null
	"${bh[@]}" push -q localhost/driftwarden-pause:1 "oci-archive:$bin.partial/pause.oci.tar:localhost/driftwarden-pause:1"
	"${bh[@]}" rm --all >/dev/null 2>&1 || true
	rm -rf "$storage"
	;;
helm)
	# Helm's own release build sets these: its version, and the Kubernetes
	# version `helm template` and `helm lint` assume without a cluster (the
	# control plane's, instead of the library default of 1.20).
	helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
	for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		helm_ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
	done

	build helm "$here/helm" helm.sh/helm/v3/cmd/helm "$helm_ldflags"
	;;
prometheus)
	# The test scrapes a static target and asks the HTTP API only:
	# remove_all_sd leaves out every service discovery but static and file
	# (most of the dependency tree), and without the builtinassets tag the
	# web UI is not compiled in.
	prom_ldflags="-s -w"
	prom_ldflags+=" -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v}"
	prom_ldflags+=" -X github.com/prometheus/common/version.Branch=release"
	prom_ldflags+=" -X github.com/prometheus/common/version.Revision=$PROMETHEUS_MODULE_VERSION"
	build prometheus "$here/prometheus" github.com/prometheus/prometheus/cmd/prometheus "$prom_ldflags" remove_all_sd
	;;
alertmanager)
	am_ldflags="-s -w -X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}"
	build alertmanager "$here/alertmanager" github.com/prometheus/alertmanager/cmd/alertmanager "$am_ldflags"
	;;
esac

rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "$target binaries built in $bin" >&2
echo "$bin"

#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager,
# and a kubectl of the same release)
# from the pinned Go modules in ./etcd and ./kube, and caches the binaries in a
# directory keyed by the versions and the go.sum files, so a second run is a
# no-op. Prints the binary directory on the last line of stdout.
#
#   DRIFTWARDEN_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/driftwarden)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KUBE_VERSION=v1.35.4
ETCD_VERSION=v3.6.5

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

key=$(cat "$here/kube/go.mod" "$here/kube/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go" \
	| sha256sum | cut -c1-12)
cache_root=${DRIFTWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/driftwarden}
bin="$cache_root/controlplane/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-$key"

if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kubectl" && -x "$bin/etcd" ]]; then
	echo "control plane binaries cached in $bin" >&2
	echo "$bin"
	exit 0
fi

command -v go >/dev/null || { echo "error: Go is required to build the control plane (https://go.dev/dl)" >&2; exit 1; }
mkdir -p "$bin.partial"
log="$bin.partial/build.log"

# go build prints one line per compiled package with -v; show a heartbeat
# instead of thousands of lines.
build() { # name module-dir package ldflags
	local name=$1 dir=$2 pkg=$3 ldflags=$4 start=$SECONDS pid
	echo "building $name (a cold build takes several minutes)..." >&2
	(cd "$dir" && go build -v -trimpath -ldflags "$ldflags" -o "$bin.partial/$name" "$pkg") >>"$log" 2>&1 &
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

build etcd "$here/etcd" . "-s -w"
build kube-apiserver "$here/kube" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kube-controller-manager "$here/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build kubectl "$here/kube" k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"

rm -rf "$bin"
mv "$bin.partial" "$bin"
echo "control plane binaries built in $bin" >&2
echo "$bin"

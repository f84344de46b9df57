#!/usr/bin/env bash
# Peers side by side (issue #21, goal 5): Argo CD's and Flux's diff on the
# captured fixtures of benches/data, and driftwarden's (`cargo bench
# --bench diff`) in the same run, as one markdown table with the ratios.
#
#   benches/peers.sh [--no-server] > results.md
#
# The Go programs are in benches/peers (one module per peer: they need
# different k8s.io versions). With a server (the default), a throwaway
# etcd + kube-apiserver from the harness's cached binaries
# (dev/controlplane/build.sh controlplane, or DRIFTWARDEN_CONTROLPLANE_BIN)
# runs on 127.0.0.1 for Flux's dry-run diff; --no-server skips that row.
# The table goes to stdout, progress and each peer's findings to stderr.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
server=1
for arg in "$@"; do
	case $arg in
	--no-server) server=0 ;;
	*) echo "usage: $0 [--no-server]" >&2; exit 2 ;;
	esac
done

cache=${DRIFTWARDEN_CACHE_DIR:-$HOME/.cache/driftwarden}/peers
mkdir -p "$cache/bin"
out=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$out"
}
trap cleanup EXIT

# Every dependency comes from go.mod/go.sum as committed; -p 1 because the
# machine is shared.
export GOFLAGS="-mod=readonly -buildvcs=false"
echo "building the peer programs..." >&2
(cd benches/peers && go build -p 1 -o "$cache/bin/table" ./cmd/table)
(cd benches/peers/argocd && go build -p 1 -o "$cache/bin/argocd" .)
(cd benches/peers/flux && go build -p 1 -o "$cache/bin/flux" .)
# The OpenAPI document Argo CD's structured-merge-diff mode parses types
# with: the one in the k8s.io/kubernetes module gitops-engine builds with.
openapi="$(cd benches/peers/argocd && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/api/openapi-spec/swagger.json"

kubeconfig=()
if [ "$server" = 1 ]; then
	bin=${DRIFTWARDEN_CONTROLPLANE_BIN:-$(dev/controlplane/build.sh controlplane)}
	read -r etcd_port peer_port api_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
	openssl genrsa -out "$out/sa.key" 2048 2>/dev/null
	openssl rsa -in "$out/sa.key" -pubout -out "$out/sa.pub" 2>/dev/null
	token=$(openssl rand -hex 16)
	echo "$token,admin,admin,system:masters" >"$out/tokens.csv"
	"$bin/etcd" --name=default --data-dir="$out/etcd" --unsafe-no-fsync=true --log-level=warn \
		--listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
		--initial-cluster="default=http://127.0.0.1:$peer_port" 2>"$out/etcd.log" &
	pids+=($!)
	"$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 --secure-port="$api_port" --cert-dir="$out/certs" \
		--token-auth-file="$out/tokens.csv" --authorization-mode=RBAC --anonymous-auth=false \
		--service-account-key-file="$out/sa.pub" --service-account-signing-key-file="$out/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true --profiling=false 2>"$out/apiserver.log" &
	pids+=($!)
	cat >"$out/kubeconfig" <<-EOF
	apiVersion: v1
	kind: Config
	clusters: [{name: peers, cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}}]
	users: [{name: admin, user: {token: "$token"}}]
	contexts: [{name: peers, context: {cluster: peers, user: admin}}]
	current-context: peers
	EOF
	for _ in $(seq 120); do
		"$bin/kubectl" --kubeconfig "$out/kubeconfig" get --raw /readyz >/dev/null 2>&1 && break
		sleep 0.5
	done
	"$bin/kubectl" --kubeconfig "$out/kubeconfig" get --raw /readyz >/dev/null ||
		{ echo "the API server did not start; its log:" >&2; tail -20 "$out/apiserver.log" >&2; exit 1; }
	echo "kube-apiserver $("$bin/kube-apiserver" --version | cut -d' ' -f2) on 127.0.0.1:$api_port" >&2
	kubeconfig=(-kubeconfig "$out/kubeconfig")
fi

# driftwarden's bench binary is built first, so no compilation runs while
# the peers are timed.
echo "building driftwarden's benchmark..." >&2
cargo bench --bench diff --no-run >&2

# One core each, as driftwarden's diff runs: with more, Go's collector
# would work on the other core, unaccounted.
echo "load before: $(uptime)" >&2
echo "timing Argo CD (gitops-engine)..." >&2
GOMAXPROCS=1 "$cache/bin/argocd" -data benches/data -openapi "$openapi" -json "$out/argocd.jsonl" >&2
echo "timing Flux (fluxcd/pkg/ssa)..." >&2
GOMAXPROCS=1 "$cache/bin/flux" -data benches/data "${kubeconfig[@]}" -json "$out/flux.jsonl" >&2
echo "timing driftwarden (cargo bench --bench diff)..." >&2
# The captured fixtures only (not deployment-with-status, parse, verify).
cargo bench --bench diff -- --noplot '^diff/(deployment|service|configmap-100-keys|role-20-rules|crd-50kb)/' >&2
echo "load after: $(uptime)" >&2

# Kept, so the table can be printed again: $cache/bin/table -criterion target/criterion $cache/*.jsonl
cp "$out/argocd.jsonl" "$out/flux.jsonl" "$cache/"
"$cache/bin/table" -criterion "${CARGO_TARGET_DIR:-target}/criterion" "$cache/argocd.jsonl" "$cache/flux.jsonl"

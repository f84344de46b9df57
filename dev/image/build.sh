#!/usr/bin/env bash
# Builds the operator image without a container engine: the static (musl)
# release binary on the host, then the Containerfile's `prebuilt` target with
# buildah (vfs storage, chroot isolation: no daemon, no pulled base image),
# exported as an OCI archive that containerd (`ctr images import`) and
# Docker/Podman (`docker load` does not read OCI archives: use
# `podman load` or `skopeo`) can load. Cached by the digest of the sources
# the binary is built from, so a second run is a no-op. Prints the archive's
# path on the last line of stdout.
#
#   dev/image/build.sh          builds (or finds) the image archive
#
#   DRIFTWARDEN_CACHE_DIR  cache root (default: ${XDG_CACHE_HOME:-~/.cache}/driftwarden)
#   IMAGE                  the name the image is tagged with
#                          (default: the chart's ghcr.io/driftwarden/driftwarden:<version>)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image=${IMAGE:-ghcr.io/driftwarden/driftwarden:$version}
target=x86_64-unknown-linux-musl

# What the binary is built from: tracked and untracked-but-not-ignored files
# of the product crate, by content (a dirty tree gets its own key).
sources=$(git ls-files --cached --others --exclude-standard -- Cargo.toml Cargo.lock Containerfile src crds charts/driftwarden/crds | sort -u)
key=$( { printf '%s\n' "$image"; while IFS= read -r f; do [[ -f $f ]] && sha256sum "$f"; done <<<"$sources"; } | sha256sum | cut -c1-12)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . 2>/dev/null || revision+="-dirty"

cache_root=${DRIFTWARDEN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/driftwarden}
dir="$cache_root/image"
archive="$dir/driftwarden-$version-$key.oci.tar"
if [[ -s $archive ]]; then
	echo "image cached in $archive" >&2
	echo "$archive"
	exit 0
fi
mkdir -p "$dir"

# Debian's packages for what a fresh machine lacks (root only; otherwise say
# what to install).
missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((${#missing[@]})); then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		echo "installing ${missing[*]} from Debian" >&2
		(apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}") >&2
	else
		echo "error: building the image needs ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
		exit 1
	fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
	echo "adding the Rust target $target" >&2
	rustup target add "$target" >&2
fi

# A target directory of its own that outlives a checkout: the release build
# of the dependencies is then done once per machine, as Go's build cache is.
start=$SECONDS
echo "building the release binary for $target..." >&2
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$dir/target" cargo build --locked --release --target "$target" -p driftwarden --bin driftwarden >&2
echo "  binary built in $((SECONDS - start))s" >&2

stage=$(mktemp -d)
storage=$(mktemp -d)
trap 'buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs rm --all >/dev/null 2>&1 || true; rm -rf "$stage" "$storage"' EXIT
cp "$dir/target/$target/release/driftwarden" "$stage/driftwarden"
cp /etc/ssl/certs/ca-certificates.crt "$stage/ca-certificates.crt"

bh=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver vfs)
start=$SECONDS
"${bh[@]}" bud --quiet --isolation chroot --target prebuilt -f "$repo/Containerfile" \
	--build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
	-t "$image" "$stage" >&2
"${bh[@]}" push --quiet "$image" "oci-archive:$archive.partial.$$:$image" >&2
mv "$archive.partial.$$" "$archive"
echo "  image $image built in $((SECONDS - start))s: $(du -h "$archive" | cut -f1) ($archive)" >&2
echo "$archive"

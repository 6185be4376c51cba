#!/usr/bin/env bash
# Image build benchmark: the same arm64 package set unpacked and packed into a squashfs by
#   peer:    mmdebstrap --variant=extract + mksquashfs (gzip, -reproducible)
#   labboot: labboot image build (squashfs output only)
# Both start from the same warm package cache, so neither downloads; one run each, wall time.
# Ratio = labboot / peer (goal <= 1.0). Needs root (mmdebstrap's root mode) and scripts/setup.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
packages=(busybox-static coreutils bash libgnutls30 libnl-genl-3-200)
work=$(mktemp -d /tmp/labboot-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
cache=${LABBOOT_CACHE:-$target/tmp/imagebuilder-cache}

(cd "$root" && cargo build --quiet --release -p appliance)
labboot=$target/release/labboot

list=$(IFS=,; echo "${packages[*]}")
cat >"$work/bench.yaml" <<YAML
arch: arm64
suite: bookworm
epoch: 1700000000
packages: [$list]
outputs: [squashfs]
YAML

now() { date +%s.%N; }

# Warm the cache (downloads happen here, untimed), then time labboot.
"$labboot" image build "$work/bench.yaml" --out "$work/warm" --cache "$cache" -q
t0=$(now)
"$labboot" image build "$work/bench.yaml" --out "$work/labboot" --cache "$cache" -q
t1=$(now)

# The peer, with apt's archive cache seeded from the same .deb files.
sources=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
t2=$(now)
echo "$sources" | mmdebstrap --quiet --variant=extract --architectures=arm64 \
  --include="$list" \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="cp $cache/*.deb \"\$1/var/cache/apt/archives/\"" \
  bookworm "$work/peer-root" - >/dev/null 2>"$work/mmdebstrap.log" || { cat "$work/mmdebstrap.log"; exit 1; }
SOURCE_DATE_EPOCH=1700000000 mksquashfs "$work/peer-root" "$work/peer.squashfs" \
  -comp gzip -reproducible -quiet -no-progress >/dev/null
t3=$(now)

ours=$(echo "$t1 - $t0" | bc -l)
peer=$(echo "$t3 - $t2" | bc -l)
printf 'packages: %s\n' "${packages[*]}"
printf 'labboot image build: %6.2f s  %10d bytes  %6d entries\n' "$ours" \
  "$(stat -c %s "$work/labboot/rootfs.squashfs")" "$(unsquashfs -l "$work/labboot/rootfs.squashfs" | grep -c squashfs-root)"
printf 'mmdebstrap+mksquashfs: %6.2f s  %10d bytes  %6d entries\n' "$peer" \
  "$(stat -c %s "$work/peer.squashfs")" "$(unsquashfs -l "$work/peer.squashfs" | grep -c squashfs-root)"
printf 'ratio labboot/peer: %.2f x (goal <= 1.0)\n' "$(echo "$ours / $peer" | bc -l)"

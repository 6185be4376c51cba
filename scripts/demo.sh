#!/usr/bin/env bash
# The virtual-board demo: makes an SD card with `labboot sdcard`, boots it in QEMU arm64 with
# Debian's U-Boot inside a private network namespace, and shows the console until the bootstrap
# script has imported the board's identity and asked for DHCP. Needs root (namespace + tap).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p appliance --bin labboot
work=$(mktemp -d)
ns="lbdemo$$"
cleanup() {
  [ -n "${qemu_pid:-}" ] && kill "$qemu_pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

./target/debug/labboot sdcard --board-id demo-board --token demo-token --arch arm64 -o "$work/sd.img"
ip netns add "$ns"
ip netns exec "$ns" ip tuntap add lbtap0 mode tap
ip netns exec "$ns" ip addr add 192.168.77.1/24 dev lbtap0
ip netns exec "$ns" ip link set lbtap0 up

echo "demo: booting the virtual board (QEMU arm64 + U-Boot); its console follows"
ip netns exec "$ns" qemu-system-aarch64 -M virt -cpu cortex-a57 -m 512 -nographic -nodefaults \
  -monitor none -serial stdio -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin \
  -drive if=none,id=sd,format=raw,file="$work/sd.img" -device virtio-blk-device,drive=sd \
  -netdev tap,id=net0,ifname=lbtap0,script=no,downscript=no -device virtio-net-device,netdev=net0 \
  </dev/null >"$work/console.log" 2>&1 &
qemu_pid=$!

seen=""
for _ in $(seq 1 600); do
  if grep -q "BOOTP broadcast" "$work/console.log"; then seen=yes; break; fi
  sleep 0.1
done
sed -n '/U-Boot 20/,$p' "$work/console.log"
if [ -n "$seen" ]; then
  echo
  echo "demo: the board ran the bootstrap script from its card, imported identity demo-board and asked for DHCP."
else
  echo "demo: the board did not reach DHCP within 60 s; console above" >&2
  exit 1
fi

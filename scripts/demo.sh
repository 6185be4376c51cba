#!/usr/bin/env bash
# The virtual-board demo: makes an SD card with `labboot sdcard`, starts `labboot dhcp` and
# `labboot tftp` in a private network namespace, and boots the card in QEMU arm64 with Debian's
# U-Boot. The board imports its identity, gets an address, fetches the board script rendered for
# it and runs it. Needs root (namespace + tap); everything is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p appliance --bin labboot
bin="$PWD/target/debug/labboot"
work=$(mktemp -d)
ns="lbdemo$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/tftp" "$work/boards"
cat > "$work/boards/default.txt" <<'SCRIPT'
echo "labboot demo: board {BOARD_ID} at {CLIENT_IP} is running the script labboot rendered for it"
echo "labboot demo: done"
sleep 600
SCRIPT
"$bin" sdcard --board-id demo-board --token demo-token --arch arm64 -o "$work/sd.img"

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add lbtap0 mode tap
ip netns exec "$ns" ip addr add 192.168.77.1/24 dev lbtap0
ip netns exec "$ns" ip link set lbtap0 up

ip netns exec "$ns" "$bin" dhcp --interface lbtap0 --server-ip 192.168.77.1 \
  --pool 192.168.77.100-192.168.77.200 --prefix 24 --lease-file "$work/leases" 2>"$work/dhcp.log" &
pids+=($!)
ip netns exec "$ns" "$bin" tftp --listen 192.168.77.1:69 --root "$work/tftp" \
  --board-scripts "$work/boards" 2>"$work/tftp.log" &
pids+=($!)

echo "demo: booting the virtual board (QEMU arm64 + U-Boot); its console follows"
ip netns exec "$ns" qemu-system-aarch64 -M virt -cpu cortex-a57 -m 512 -nographic -nodefaults \
  -monitor none -serial stdio -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin \
  -drive if=none,id=sd,format=raw,file="$work/sd.img" -device virtio-blk-device,drive=sd \
  -netdev tap,id=net0,ifname=lbtap0,script=no,downscript=no -device virtio-net-device,netdev=net0 \
  </dev/null >"$work/console.log" 2>&1 &
pids+=($!)

done=""
for _ in $(seq 1 900); do
  if grep -q "labboot demo: done" "$work/console.log"; then done=yes; break; fi
  sleep 0.1
done
sed -n '/U-Boot 20/,$p' "$work/console.log"
echo
echo "--- labboot dhcp ---"; cat "$work/dhcp.log"
echo "--- labboot tftp ---"; cat "$work/tftp.log"
echo
if [ -n "$done" ]; then
  echo "demo: the board booted its card, was given an address by labboot dhcp and ran the script labboot tftp rendered for it."
else
  echo "demo: the board did not finish within 90 s; console and server logs above" >&2
  exit 1
fi

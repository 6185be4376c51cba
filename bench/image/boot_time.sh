#!/usr/bin/env bash
# Boot time of the labboot master through real U-Boot, power-on → `labboot-master` line, with
# the wall time of every milestone on the console (QEMU arm64 virt under TCG, 1 CPU, 512 MiB).
#
# The lab is the one tests/tests/image_boot.rs builds: a `labboot sdcard` card, `labboot dhcp`,
# `labboot tftp` (the master's boot.scr served as labboot/board7/boot.scr) and `labboot nbd`
# (rootfs.squashfs read-only), in a private network namespace with a tap. Each run is a fresh
# QEMU; console lines are stamped by a reader on QEMU's stdout (seconds since QEMU was started).
#
# Two U-Boot environments are measured in the same run:
#   default   U-Boot's built-in environment (bootdelay=2: the autoboot countdown is waited out);
#   delay0    a saved environment (QEMU's second flash bank, where this U-Boot keeps it) equal to
#             the built-in one but with bootdelay=0 — what `setenv bootdelay 0; saveenv` once
#             on a lab board gives.
# Usage: [RECIPE=master.yaml] bench/image/boot_time.sh [RUNS]   (as root; scripts/setup.sh installs
# the tools; RECIPE defaults to the shipped imagebuilder/recipes/master-arm64.yaml)
set -euo pipefail

runs=${1:-3}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
cache=${LABBOOT_CACHE:-$target/tmp/imagebuilder-cache}
uboot=/usr/lib/u-boot/qemu_arm64/u-boot.bin
work=$(mktemp -d /tmp/labboot-bench-boot.XXXXXX)
ns=lbbench$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns delete "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$root" && cargo build --quiet --release -p appliance)
labboot=$target/release/labboot

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$labboot" image build -q "${RECIPE:-$root/imagebuilder/recipes/master-arm64.yaml}" --out "$work/out" --cache "$cache"
mkdir -p "$work/tftp/labboot/master" "$work/tftp/labboot/board7"
cp "$work/out/vmlinuz" "$work/out/initrd.cpio.gz" "$work/tftp/labboot/master/"
cp "$work/out/boot.scr" "$work/tftp/labboot/board7/boot.scr"
"$labboot" sdcard --board-id board7 --token tok --arch arm64 -o "$work/sd.img" >/dev/null
printf 'vmlinuz %d bytes, initrd.cpio.gz %d bytes, rootfs.squashfs %d bytes\n' \
  "$(stat -c %s "$work/out/vmlinuz")" "$(stat -c %s "$work/out/initrd.cpio.gz")" \
  "$(stat -c %s "$work/out/rootfs.squashfs")"

# The saved environment: U-Boot's built-in one (a NUL-separated block in u-boot.bin that
# starts with bootcmd= and ends with an empty string) with bootdelay=0, as mkenvimage writes it for this board's 256 KiB env.
python3 - "$uboot" "$work/env.txt" <<'PY'
import sys
blob = open(sys.argv[1], "rb").read()
at = blob.index(b"bootdelay=2\0")
start = blob.rindex(b"\0bootcmd=", 0, at) + 1
end = blob.index(b"\0\0", at)
env = [v for v in blob[start:end].split(b"\0") if v]
assert any(v.startswith(b"bootcmd=") for v in env), "no bootcmd in the built-in environment"
env = [b"bootdelay=0" if v == b"bootdelay=2" else v for v in env]
open(sys.argv[2], "wb").write(b"\n".join(env) + b"\n")
PY
mkenvimage -s 0x40000 -o "$work/env.bin" "$work/env.txt"

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" tuntap add dev tap0 mode tap
ip -n "$ns" addr add 10.78.0.1/24 dev tap0
ip -n "$ns" link set tap0 up
start() { # name, args...
  local name=$1; shift
  ip netns exec "$ns" "$labboot" --log info "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.log" && return 0; sleep 0.1; done
  echo "$name did not start:"; cat "$work/$name.log"; exit 1
}
start dhcp dhcp --interface tap0 --server-ip 10.78.0.1 --pool 10.78.0.10-10.78.0.20 --prefix 24
start tftp tftp --listen 10.78.0.1:69 --root "$work/tftp"
start nbd nbd --listen 10.78.0.1:10809 --export "master=$work/out/rootfs.squashfs:ro"

# Milestones: label, then the first console line (regex) that marks it.
milestones=(
  "U-Boot banner|U-Boot 20[0-9][0-9]\."
  "autoboot prompt|Hit any key to stop autoboot"
  "card's boot.scr|labboot: bootstrap from"
  "U-Boot DHCP bound|DHCP client bound"
  "board boot.scr fetched|Filename 'labboot/board7/boot.scr'"
  "kernel TFTP start|Filename 'labboot/master/vmlinuz'"
  "initrd TFTP start|Filename 'labboot/master/initrd.cpio.gz'"
  "Starting kernel|Starting kernel"
  "initrd DHCP lease|labboot-initrd: .* has "
  "NBD connected|Connected /dev/nbd0|nbd0: detected capacity"
  "master up|labboot-master board="
)

boot() { # env-kind, log
  local flash=()
  if [ "$1" = delay0 ]; then
    truncate -s 64M "$work/flash1.img"
    dd if="$work/env.bin" of="$work/flash1.img" conv=notrunc status=none
    flash=(-drive "if=pflash,unit=1,format=raw,file=$work/flash1.img")
  fi
  rm -f "$work/console.fifo"; mkfifo "$work/console.fifo"
  local t0; t0=$(date +%s.%N)
  ip netns exec "$ns" qemu-system-aarch64 -M virt -cpu cortex-a57 -smp 1 -m 512 \
    -nographic -nodefaults -no-reboot -monitor none -bios "$uboot" "${flash[@]}" \
    -drive "if=none,id=sd,format=raw,file=$work/sd.img" -device virtio-blk-device,drive=sd \
    -netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-device,netdev=net0 \
    -serial stdio </dev/null >"$work/console.fifo" 2>"$work/qemu.err" &
  local qemu=$!
  perl -MTime::HiRes=time -e '
    my $t0 = shift; $| = 1; alarm 120;
    while (my $l = <STDIN>) {
      $l =~ s/\r//g; printf "%7.3f %s", time - $t0, $l;
      last if $l =~ /labboot-master board=/;
    }' "$t0" <"$work/console.fifo" >"$2" || true
  kill "$qemu" 2>/dev/null || true
  [ -s "$2" ] || { echo "QEMU printed nothing:"; cat "$work/qemu.err"; }
  wait "$qemu" 2>/dev/null || true
}

declare -A sums
for kind in default delay0; do
  for i in $(seq "$runs"); do
    log=$work/console-$kind-$i.log
    boot "$kind" "$log"
    row="$kind run $i:"
    for m in "${milestones[@]}"; do
      label=${m%%|*}; re=${m#*|}
      t=$(grep -E -m1 -- "$re" "$log" | awk '{print $1}' || true)
      row+=" ${label}=${t:--}"
    done
    echo "$row"
    total=$(grep -E -m1 "labboot-master board=" "$log" | awk '{print $1}' || true)
    sums[$kind]+="${total:-nan} "
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
d=$(echo "${sums[default]}" | median)
z=$(echo "${sums[delay0]}" | median)
printf 'median power-on → master line: default env %s s, bootdelay=0 env %s s (goal <= 4.0 s)\n' "$d" "$z"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "${KEEP_LOGS:-}" ]; then cp "$work"/console-*.log "$KEEP_LOGS"/; fi

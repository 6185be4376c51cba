#!/usr/bin/env bash
# A lab's Monday morning: BOARDS simulated boards power on at once and boot, against labboot's
# servers and, in the same run, against dnsmasq 2.90 (DHCP + TFTP) + nbdkit 1.32 (file plugin,
# cow filter). Not a test; needs root.
#
#   bench/storm/run.sh                 # BOARDS=100; override BOARDS=… KERNEL_MIB=… WINDOW=…
#   LABBOOT_BIN=… STORM_BIN=… bench/storm/run.sh   # use given binaries instead of building
#
# Setup: two fresh network namespaces (unique names, removed on exit) joined by a veth pair;
# the servers listen on 10.88.0.1/16 in one, tests/src/bin/storm-boards.rs runs in the other.
# Every board is a thread of storm-boards, all released by one barrier; each one does
#   1. DHCP DISCOVER/OFFER/REQUEST/ACK from its own MAC (broadcast flag, 1 s retransmit),
#   2. puts the leased address on its interface and, from that address,
#   3. TFTP-reads the KERNEL_MIB kernel and the INITRD_MIB initrd (blksize 1468, windowsize
#      WINDOW, tsize; byte counts checked),
#   4. reads MASTER_MIB of the master image (MASTER_IMAGE_MIB large) over NBD from the export
#      `master` (1 MiB reads, 4 in flight) — the moment the last byte arrives is "master readable".
# Printed per server set: failures (goal 0), p50/p99/max seconds from the common start to
# "master readable", the aggregate rate (TFTP + NBD bytes of all boards / wall time), the
# servers' CPU seconds (utime + stime from /proc/PID/stat, summed over our three processes or
# dnsmasq + nbdkit, read just before they are stopped) and their peak memory (VmHWM, summed).
# The ratio is our p99 / their p99 (goal <= 0.5: the last of our boards is readable in half the
# time). Both sets run with logging at warning level or "quiet" (no per-lease/per-file lines);
# dnsmasq gets --no-ping (ours does not ping-check by default) and --tftp-max raised above
# BOARDS (its default of 50 would refuse transfers). dnsmasq does not implement RFC 7440
# windowsize: its OACK leaves the option out, so its transfers run at window 1 (the client falls
# back as RFC 7440 says). The client shares the host's CPUs with the servers.
set -euo pipefail

BOARDS=${BOARDS:-100}
KERNEL_MIB=${KERNEL_MIB:-32}
INITRD_MIB=${INITRD_MIB:-8}
MASTER_MIB=${MASTER_MIB:-64}
MASTER_IMAGE_MIB=${MASTER_IMAGE_MIB:-256}
WINDOW=${WINDOW:-16}

[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (network namespaces, port 67/69)" >&2; exit 1; }
for tool in ip ss dnsmasq nbdkit; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (apt-get install iproute2 dnsmasq nbdkit; scripts/setup.sh)" >&2; exit 1; }
done
[ "$BOARDS" -ge 1 ] && [ "$BOARDS" -le 250 ] || { echo "run.sh: BOARDS must be 1..250 (one DHCP pool of 250)" >&2; exit 1; }

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${LABBOOT_BIN:-}" ] || [ -z "${STORM_BIN:-}" ]; then
  (cd "$root" && CARGO_TARGET_DIR=$target cargo build --quiet --release \
    -p appliance --bin labboot -p labboot-tests --bin storm-boards)
fi
LABBOOT_BIN=${LABBOOT_BIN:-$target/release/labboot}
STORM_BIN=${STORM_BIN:-$target/release/storm-boards}

tag=$$
srv=bss$tag cli=bsc$tag
work=$(mktemp -d /tmp/labboot-bench-storm.XXXXXX)
chmod 755 "$work"   # dnsmasq reads the TFTP root as user nobody
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns delete "$srv" 2>/dev/null || true
  ip netns delete "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$srv"
ip netns add "$cli"
ip -n "$srv" link set lo up
ip -n "$cli" link set lo up
ip -n "$srv" link add vs type veth peer name vc netns "$cli"
ip -n "$srv" addr add 10.88.0.1/16 dev vs
ip -n "$cli" addr add 10.88.0.2/16 dev vc   # the boards' DISCOVERs leave from here
ip -n "$srv" link set vs up
ip -n "$cli" link set vc up

# --- files -----------------------------------------------------------------------------------
tftproot=$work/tftp
mkdir -p "$tftproot"
chmod 755 "$tftproot"
head -c $((KERNEL_MIB << 20)) /dev/urandom >"$tftproot/Image"
head -c $((INITRD_MIB << 20)) /dev/urandom >"$tftproot/initrd.img"
chmod 644 "$tftproot"/*
img=$work/master.img
head -c $((MASTER_IMAGE_MIB << 20)) /dev/urandom >"$img"
cat "$tftproot"/* "$img" >/dev/null   # into the page cache for both sets

# --- helpers ---------------------------------------------------------------------------------
listening() { # proto port -> true once something listens on it in the server namespace
  ip netns exec "$srv" ss -Hln"$1" "sport = :$2" | grep -q .
}
wait_ready() { # name proto port pid
  for _ in $(seq 200); do
    listening "$2" "$3" && return 0
    if ! kill -0 "$4" 2>/dev/null; then echo "run.sh: $1 died:" >&2; cat "$work/$1.log" >&2; exit 1; fi
    sleep 0.05
  done
  echo "run.sh: $1 does not listen on $2 port $3" >&2; cat "$work/$1.log" >&2; exit 1
}
start() { # name cmd… : starts cmd in the server namespace (log in $work/name.log), sets $last
  local name=$1; shift
  ip netns exec "$srv" "$@" >"$work/$name.log" 2>&1 &
  last=$!
  pids+=("$last")
}
cpu_of() { # pids… -> summed utime+stime in seconds
  local hz t=0 p
  hz=$(getconf CLK_TCK)
  for p in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done
  awk -v t="$t" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'
}
hwm_of() { # pids… -> summed VmHWM in MiB
  local k=0 p
  for p in "$@"; do k=$((k + $(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status"))); done
  awk -v k="$k" 'BEGIN { printf "%.1f", k / 1024 }'
}
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
storm() { # name -> runs the boards against the servers up now; output in $work/name.out
  ip netns exec "$cli" "$STORM_BIN" --server 10.88.0.1 --boards "$BOARDS" --interface vc \
    --kernel Image --kernel-bytes $((KERNEL_MIB << 20)) \
    --initrd initrd.img --initrd-bytes $((INITRD_MIB << 20)) \
    --nbd-export master --nbd-bytes $((MASTER_MIB << 20)) --window "$WINDOW" >"$work/$1.out" 2>&1 \
    || { echo "run.sh: storm-boards failed against $1:" >&2; cat "$work/$1.out" >&2; exit 1; }
}
field() { # file key -> value of key= on the SUMMARY line
  sed -n 's/^SUMMARY .*[ ]'"$2"'=\([^ ]*\).*/\1/p' "$1"
}

echo "Monday morning storm: $BOARDS boards, kernel $KERNEL_MIB MiB + initrd $INITRD_MIB MiB over TFTP (window $WINDOW asked, blksize 1468),"
echo "  $MASTER_MIB MiB of a $MASTER_IMAGE_MIB MiB master over NBD; veth between two netns, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- ours ------------------------------------------------------------------------------------
start labboot-dhcp "$LABBOOT_BIN" --log warn dhcp --interface vs --server-ip 10.88.0.1 --prefix 16 \
  --pool 10.88.1.1-10.88.1.250 --lease-file "$work/labboot.leases"
p_dhcp=$last
start labboot-tftp "$LABBOOT_BIN" --log warn tftp --root "$tftproot" --listen 10.88.0.1:69 --max-window 64
p_tftp=$last
start labboot-nbd "$LABBOOT_BIN" --log warn nbd --listen 10.88.0.1:10809 --export "master=$img:cow"
p_nbd=$last
wait_ready labboot-dhcp u 67 "$p_dhcp"
wait_ready labboot-tftp u 69 "$p_tftp"
wait_ready labboot-nbd t 10809 "$p_nbd"
storm labboot
ours_cpu=$(cpu_of "$p_dhcp" "$p_tftp" "$p_nbd")
ours_mem=$(hwm_of "$p_dhcp" "$p_tftp" "$p_nbd")
ours_detail="dhcp $(cpu_of "$p_dhcp") s $(hwm_of "$p_dhcp") MiB, tftp $(cpu_of "$p_tftp") s $(hwm_of "$p_tftp") MiB, nbd $(cpu_of "$p_nbd") s $(hwm_of "$p_nbd") MiB"
stop_all

# --- dnsmasq + nbdkit --------------------------------------------------------------------------
start dnsmasq dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=vs --bind-interfaces \
  --dhcp-range=10.88.2.1,10.88.2.250,255.255.0.0,1h --dhcp-leasefile="$work/dnsmasq.leases" \
  --dhcp-authoritative --no-ping --quiet-dhcp --enable-tftp --tftp-root="$tftproot" --quiet-tftp \
  --tftp-max=$((BOARDS * 2 + 10)) --pid-file= --log-facility=-
p_dns=$last
start nbdkit nbdkit -f -i 10.88.0.1 -p 10809 -e master --filter=cow file "file=$img"
p_kit=$last
wait_ready dnsmasq u 67 "$p_dns"
wait_ready dnsmasq u 69 "$p_dns"
wait_ready nbdkit t 10809 "$p_kit"
storm peers
peer_cpu=$(cpu_of "$p_dns" "$p_kit")
peer_mem=$(hwm_of "$p_dns" "$p_kit")
peer_detail="dnsmasq $(cpu_of "$p_dns") s $(hwm_of "$p_dns") MiB, nbdkit $(cpu_of "$p_kit") s $(hwm_of "$p_kit") MiB"
stop_all

# --- report ----------------------------------------------------------------------------------
for set in labboot peers; do
  echo
  echo "== $set"
  grep -v '^SUMMARY' "$work/$set.out"
done
echo
printf '%-34s %16s %18s\n' "" "labboot" "dnsmasq + nbdkit"
row() { printf '%-34s %16s %18s\n' "$1" "$2" "$3"; }
row "boards ok / failed (goal 0 failed)" "$(field "$work/labboot.out" ok) / $(field "$work/labboot.out" failed)" \
  "$(field "$work/peers.out" ok) / $(field "$work/peers.out" failed)"
row "master readable p50 (s)" "$(field "$work/labboot.out" p50)" "$(field "$work/peers.out" p50)"
row "master readable p99 (s)" "$(field "$work/labboot.out" p99)" "$(field "$work/peers.out" p99)"
row "master readable max (s)" "$(field "$work/labboot.out" max)" "$(field "$work/peers.out" max)"
row "aggregate (MiB/s)" "$(awk -v b="$(field "$work/labboot.out" bps)" 'BEGIN { printf "%.1f", b / 1048576 }')" \
  "$(awk -v b="$(field "$work/peers.out" bps)" 'BEGIN { printf "%.1f", b / 1048576 }')"
row "server CPU (s)" "$ours_cpu" "$peer_cpu"
row "server peak RSS, summed (MiB)" "$ours_mem" "$peer_mem"
echo "per process (CPU, peak RSS): ours: $ours_detail; peers: $peer_detail"
awk -v a="$(field "$work/labboot.out" p99)" -v b="$(field "$work/peers.out" p99)" \
  'BEGIN { if (b > 0) printf "ratio p99 ours / theirs: %.2f (goal <= 0.5)\n", a / b; else print "ratio: the peers had no readable board" }'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

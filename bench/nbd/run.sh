#!/usr/bin/env bash
# NBD benchmark: labboot's server vs `nbdkit file` and `qemu-nbd -r`, all on 127.0.0.1.
#
#   cargo build --release -p appliance && bench/nbd/run.sh
#
# 1. nbdcopy of one 1 GiB image (random bytes, fully allocated, in the page cache) to `null:`,
#    with --connections 1 and 4, from each server serving the same file read-only. Each case is
#    run RUNS times and the best time kept. Ratio = peer time / our time (above 1: ours faster).
# 2. Copy-on-write overhead: over ONE connection (a cow overlay belongs to its connection, so
#    nbdcopy cannot see another connection's writes), a libnbd script dirties 10 % of the 4 KiB
#    blocks (every 10th) of the `cow` export, then reads the whole export with 64 requests of
#    256 KiB in flight; the same read of the `ro` export is the baseline. Ratio = cow / ro.
#
# Env: LABBOOT (default target/release/labboot, or $CARGO_TARGET_DIR/release/labboot),
#      RUNS (default 3), SIZE_MIB (default 1024).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
LABBOOT=${LABBOOT:-${CARGO_TARGET_DIR:-$here/target}/release/labboot}
RUNS=${RUNS:-3}
SIZE_MIB=${SIZE_MIB:-1024}
PY=/usr/bin/python3

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (run scripts/setup.sh)" >&2; exit 1; }; }
need nbdcopy; need nbdkit; need qemu-nbd
"$PY" -c 'import nbd' 2>/dev/null || { echo "bench: python3-libnbd is missing for $PY" >&2; exit 1; }
[ -x "$LABBOOT" ] || { echo "bench: $LABBOOT not built (cargo build --release -p appliance)" >&2; exit 1; }

work=$(mktemp -d /tmp/labboot-bench-nbd.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

img=$work/master.img
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$img"
cat "$img" >/dev/null # into the page cache

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2; exit 1
}

# --- servers -------------------------------------------------------------------------------
"$LABBOOT" nbd --listen 127.0.0.1:0 --export "img=$img" --export "cow=$img:cow" \
  --log warn,netboot::nbd::server=info >"$work/labboot.log" 2>&1 &
pids+=($!)
ours=""
for _ in $(seq 200); do
  ours=$(sed 's/\x1b\[[0-9;]*m//g' "$work/labboot.log" | grep -o 'listening on 127.0.0.1:[0-9]*' | cut -d: -f2 || true)
  [ -n "$ours" ] && break
  sleep 0.05
done
[ -n "$ours" ] || { echo "bench: labboot nbd did not start:" >&2; cat "$work/labboot.log" >&2; exit 1; }

kit=$(free_port)
nbdkit -f -r -i 127.0.0.1 -p "$kit" -e img file "file=$img" 2>"$work/nbdkit.log" &
pids+=($!)
wait_port "$kit"

qemu=$(free_port)
qemu-nbd -r -f raw -b 127.0.0.1 -p "$qemu" -x img -t -e 16 --cache=writeback "$img" 2>"$work/qemu-nbd.log" &
pids+=($!)
wait_port "$qemu"

# --- 1. nbdcopy to null: --------------------------------------------------------------------
best() { # best wall time in seconds of RUNS runs of "$@"
  local b="" t0 t1 t
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
  done
  printf '%.3f' "$b"
}
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }

echo "nbdcopy of a ${SIZE_MIB} MiB image to null:, best of $RUNS (seconds; ratio = peer / ours)"
printf '%-12s %10s %10s %10s %12s %12s\n' connections ours nbdkit qemu-nbd nbdkit/ours qemu/ours
for c in 1 4; do
  o=$(best nbdcopy --connections "$c" "nbd://127.0.0.1:$ours/img" null:)
  k=$(best nbdcopy --connections "$c" "nbd://127.0.0.1:$kit/img" null:)
  q=$(best nbdcopy --connections "$c" "nbd://127.0.0.1:$qemu/img" null:)
  printf '%-12s %10s %10s %10s %11sx %11sx\n' "$c" "$o" "$k" "$q" "$(ratio "$k" "$o")" "$(ratio "$q" "$o")"
done

# --- 2. cow with 10 % of blocks dirtied vs ro -------------------------------------------------
cat >"$work/cow.py" <<'EOF'
import sys, time, nbd
uri, dirty = sys.argv[1], sys.argv[2] == "dirty"
h = nbd.NBD()
h.connect_uri(uri)
size = h.get_size()
if dirty:
    block = b"\xa5" * 4096
    queued = 0
    for off in range(0, size, 40960):  # every 10th 4 KiB block
        h.aio_pwrite(block, off)
        queued += 1
        while h.aio_in_flight() >= 64:
            h.poll(-1)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    assert h.pread(4096, 40960) == block
chunk, depth = 256 * 1024, 64
bufs = [nbd.Buffer(chunk) for _ in range(depth)]
t0 = time.monotonic()
off, i = 0, 0
while off < size or h.aio_in_flight() > 0:
    while off < size and h.aio_in_flight() < depth:
        h.aio_pread(bufs[i % depth], off)
        off += chunk
        i += 1
    h.poll(-1)
print(f"{time.monotonic() - t0:.3f}")
EOF
cowbest() {
  local b="" t
  for _ in $(seq "$RUNS"); do
    t=$("$PY" "$work/cow.py" "$1" "$2")
    if [ -z "$b" ] || [ "$(echo "$t < $b" | bc -l)" = 1 ]; then b=$t; fi
  done
  echo "$b"
}
r=$(cowbest "nbd://127.0.0.1:$ours/img" clean)
w=$(cowbest "nbd://127.0.0.1:$ours/cow" dirty)
echo
echo "one connection reading the whole ${SIZE_MIB} MiB export (64 x 256 KiB in flight), best of $RUNS"
printf '%-28s %10s\n' export seconds
printf '%-28s %10s\n' "ro" "$r"
printf '%-28s %10s\n' "cow, 10% of blocks dirty" "$w"
echo "cow / ro: $(ratio "$w" "$r")x"

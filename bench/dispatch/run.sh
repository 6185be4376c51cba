#!/usr/bin/env bash
# Time from `labboot dispatch` start to the test runner's first signal for the tftp + ramdisk
# job on the virtual QEMU arm64 board (real U-Boot, Debian kernel, TCG): LAVA's serial boot
# (autoboot interrupted, commands typed with the device's character delay) against labboot's
# network-driven boot (the same commands in the board's TFTP boot script, bootdelay=0 saved in
# the board's environment), alternated in one run. Prints both medians and their ratio.
# Usage (as root): [RUNS=5] bench/dispatch/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release -p appliance --bin labboot
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
LABBOOT_BIN=$target/release/labboot RUNS=${RUNS:-3} cargo test --quiet --release -p labboot-tests --test dispatch_bench -- \
  --ignored --nocapture --test-threads 1

#!/usr/bin/env bash
# The dashboard under VIEWERS concurrent viewers (default 20) while a job runs, in a real lab: a
# private namespace with `labboot serve` and the virtual QEMU arm64 board (as root; `make setup`
# installs QEMU and U-Boot). `dashboard-load` (tests/src/bin/dashboard-load.rs) prints the first
# load (time to first byte, whole page, bytes) beside busybox httpd serving the same files, and
# the job page's live log (SSE): every viewer's event delay from the line's `dt` to its arrival.
# Usage: [VIEWERS=20] [LOADS=10] bench/dashboard/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --quiet --release -p appliance --bin labboot -p labboot-tests --bin dashboard-load
LABBOOT_BIN=$target/release/labboot exec "$target/release/dashboard-load"

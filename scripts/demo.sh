#!/usr/bin/env bash
# make demo: the appliance end to end in a private network namespace (see tests/src/demo.rs).
# Builds labboot and the demo driver, then: the master image, `labboot serve`, a card written
# with `labboot sdcard`, the virtual QEMU arm64 board netbooting the master over NBD, its agent
# checking in, a LAVA job submitted with `labboot job submit --wait`, its results, the board
# back in the master. Everything is removed at the end.
#   JOB=my-job.yaml   run a lab's own job (device type labboot-qemu-arm64) instead of the sample
#   OUT=DIR           copy the job's output directory (logs.yaml, results.yaml) there
#   KEEP=1            keep the lab running after the job until Ctrl-C
# Needs root (namespaces, taps); `make demo` runs setup first.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")/.."
cargo build --quiet -p appliance --bin labboot
cargo build --quiet -p labboot-tests --bin labboot-demo
export LABBOOT_BIN="$PWD/target/debug/labboot"
job=${JOB:-}
out=${OUT:-}
[ -n "$job" ] && case $job in /*) ;; *) job="$here/$job" ;; esac
[ -n "$out" ] && case $out in /*) ;; *) out="$here/$out" ;; esac
JOB="$job" OUT="$out" KEEP="${KEEP:-}" exec "$PWD/target/debug/labboot-demo"

#!/usr/bin/env bash
# `make fuzz-smoke`: builds every cargo-fuzz target once, then runs each on its corpus for
# SECONDS seconds (default 30), one after the other; fails if any target crashes. New inputs
# libFuzzer finds go to fuzz/target/corpus/<target>, so the checked-in seeds stay as they are.
# Needs cargo-fuzz (scripts/setup.sh installs it) and RUSTC_BOOTSTRAP=1 (stable toolchain with
# nightly flags; the Makefile sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
start=$(date +%s)
cargo fuzz build
built=$(date +%s)
echo "fuzz-smoke: built every target in $((built - start)) s"
failed=()
for target in $(cargo fuzz list); do
  work="fuzz/target/corpus/$target"
  mkdir -p "$work" "fuzz/corpus/$target"
  t0=$(date +%s)
  if cargo fuzz run "$target" "$work" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
      >"fuzz/target/$target.log" 2>&1; then
    status=ok
  else
    status=CRASHED
    failed+=("$target")
    tail -n 40 "fuzz/target/$target.log" >&2
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/target/$target.log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "fuzz/target/$target.log" | tail -n 1 || true)
  echo "fuzz-smoke: $target: $status in $(($(date +%s) - t0)) s, ${runs:-?} execs, ${cov:-cov: ?}"
done
echo "fuzz-smoke: total $(($(date +%s) - start)) s (build $((built - start)) s)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: crashed: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/target/)" >&2
  exit 1
fi

#!/usr/bin/env bash
# `make fuzz-smoke`: builds every cargo-fuzz target once, then runs each on its corpus for
# SECONDS seconds (default 30), JOBS targets at a time (default: one per CPU, libFuzzer being
# single-threaded); fails if any target crashes. New inputs libFuzzer finds go to
# fuzz/target/corpus/<target>, so the checked-in seeds stay as they are.
#
# The smoke run builds the unoptimized profile (FUZZ_PROFILE=dev, the default here: half the
# build time of release, with the same debug assertions and overflow checks); long runs, where
# executions per second matter, use FUZZ_PROFILE=release or `cargo fuzz run` directly.
# Needs cargo-fuzz (scripts/setup.sh installs it) and RUSTC_BOOTSTRAP=1 (stable toolchain with
# nightly flags; the Makefile sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
jobs="${JOBS:-$(nproc)}"
case "${FUZZ_PROFILE:-dev}" in
  dev) profile=(--dev) ;;
  release) profile=() ;;
  *) echo "fuzz-smoke: FUZZ_PROFILE must be dev or release, not '${FUZZ_PROFILE}'" >&2; exit 2 ;;
esac
start=$(date +%s)
cargo fuzz build "${profile[@]}"
built=$(date +%s)
echo "fuzz-smoke: built every target in $((built - start)) s (${FUZZ_PROFILE:-dev})"

# One target: its run, then one summary line in fuzz/target/<target>.status.
smoke_one() {
  local target=$1 work="fuzz/target/corpus/$1" t0 status runs cov
  mkdir -p "$work" "fuzz/corpus/$target"
  t0=$(date +%s)
  if cargo fuzz run "${profile[@]}" "$target" "$work" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
      >"fuzz/target/$target.log" 2>&1; then
    status=ok
  else
    status=CRASHED
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/target/$target.log" | grep -o '[0-9]*$' || true)
  cov=$(grep -o 'cov: [0-9]*' "fuzz/target/$target.log" | tail -n 1 || true)
  echo "$target: $status in $(($(date +%s) - t0)) s, ${runs:-?} execs, ${cov:-cov: ?}" \
    >"fuzz/target/$target.status"
}

targets=$(cargo fuzz list)
running=0
for target in $targets; do
  rm -f "fuzz/target/$target.status"
  smoke_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=()
for target in $targets; do
  line=$(cat "fuzz/target/$target.status" 2>/dev/null || echo "$target: CRASHED (no status: the run itself failed)")
  echo "fuzz-smoke: $line"
  if [ "${line#"$target: "}" = "${line#"$target: ok "}" ]; then
    failed+=("$target")
    tail -n 40 "fuzz/target/$target.log" >&2 || true
  fi
done
echo "fuzz-smoke: total $(($(date +%s) - start)) s (build $((built - start)) s, $jobs at a time)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz-smoke: crashed: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/target/)" >&2
  exit 1
fi

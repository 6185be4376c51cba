#!/usr/bin/env bash
# Queued jobs claimed by several appliances on one PostgreSQL, beside one appliance on SQLite
# (issue 14): `claims-load` (tests/src/bin/claims-load.rs, release build) starts its own
# PostgreSQL (initdb + pg_ctl from Debian's postgresql package, in a temporary directory, on a
# free port of 127.0.0.1, removed at exit), makes it durable like a production server (fsync,
# synchronous_commit and full_page_writes on, as SQLite's synchronous=FULL), queues 1,000 jobs
# and lets 4 instances, each with its own store and 8 boards, claim them; then the same with one
# SQLite store and one instance. Prints wall time, claims/s, lost races and double claims per
# backend, and the ratio. Exits non-zero on any double claim or failed check.
# Runs RUNS times (default 3) with the scheduler's pick (the queue's head, in run order), then
# once with --spread (each instance starts at another place of the queue) unless SPREAD=0.
# No root needed (as root, PostgreSQL runs as the `postgres` user).
# Usage: [RUNS=3] [SPREAD=1] bench/claims/run.sh [--jobs N] [--instances N] [--boards N] [--no-fsync]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
runs=${RUNS:-3}

cargo build --quiet --release -p labboot-tests --bin claims-load
load=$target/release/claims-load

echo "host: $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq 1 "$runs"); do
	echo "== run $i of $runs"
	"$load" "$@"
done
if [ "${SPREAD:-1}" != 0 ]; then
	echo "== spread"
	"$load" --spread "$@"
fi

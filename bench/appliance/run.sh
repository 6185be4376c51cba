#!/usr/bin/env bash
# N simulated board agents (default 500) checking in and long-polling against one `labboot serve`
# for S seconds (default 60): `agent-load` (tests/src/bin/agent-load.rs) prints requests by kind,
# errors and latencies; this script adds the server's CPU (utime+stime from /proc/PID/stat over
# the run) and memory (VmRSS, VmHWM at the end), checks the appliance recorded every board, and
# stops the server with SIGTERM (it must exit 0 within 10 s). Exits non-zero on any error.
# Everything lives in a temporary directory (removed on exit), on free ports of 127.0.0.1.
# Usage: [AGENTS=500] [DURATION=60] [INTERVAL=30] [POLL_SECONDS=25] [MASTER=DIR] bench/appliance/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
agents=${AGENTS:-500}
duration=${DURATION:-60}
interval=${INTERVAL:-30}
poll_seconds=${POLL_SECONDS:-25}
token=bench-admin-token

cargo build --quiet --release -p appliance --bin labboot -p labboot-tests --bin agent-load
labboot=$target/release/labboot
load=$target/release/agent-load

# A built master (labboot serve checks its files); build one if none is there.
is_master() { [ -f "$1/vmlinuz" ] && [ -f "$1/initrd.cpio.gz" ] && [ -f "$1/rootfs.squashfs" ]; }
master=${MASTER:-}
if [ -z "$master" ]; then
	for d in "$target"/tmp/appliance-master-* "$target/tmp/dispatch-master" "$target/tmp/bench-appliance-master"; do
		if is_master "$d"; then master=$d; break; fi
	done
fi
if [ -z "$master" ]; then
	master=$target/tmp/bench-appliance-master
	echo "building the master image into $master"
	"$labboot" image build -q imagebuilder/recipes/master-arm64.yaml --out "$master" \
		--cache "${LABBOOT_CACHE:-$target/tmp/imagebuilder-cache}"
fi
is_master "$master" || { echo "no master image in $master" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/labboot-bench-appliance.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# A port free for both TCP and UDP, not one handed out before in this run (the caller adds it
# to $used: this runs in a subshell).
used=" "
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		case $used in *" $p "*) continue ;; esac
		if [ -z "$(ss -Htuan "sport = :$p")" ]; then
			echo "$p"
			return
		fi
	done
}
http=$(free_port); used="$used$http "
tftp=$(free_port); used="$used$tftp "
nbd=$(free_port); used="$used$nbd "
nfs=$(free_port); used="$used$nfs "

mkdir -p "$tmp/tftp"
cat >"$tmp/appliance.yaml" <<EOF
server_ip: 127.0.0.1
state_dir: $tmp/state
http: {listen: 127.0.0.1:$http, tokens: [$token]}
master: {dir: $master}
agent: {accept_unknown: true, poll_seconds: $poll_seconds, interval: $interval}
tftp: {listen: 127.0.0.1:$tftp, root: $tmp/tftp}
nbd: {listen: 127.0.0.1:$nbd}
nfs: {listen: 127.0.0.1:$nfs}
EOF

# Room for every agent's connection on both sides (the server and agent-load inherit it).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "open files limit: $(ulimit -n); load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"

url=http://127.0.0.1:$http
"$labboot" serve --config "$tmp/appliance.yaml" >"$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
	curl -fsS -o /dev/null "$url/api/v1/health" 2>/dev/null && break
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "labboot serve exited:" >&2; tail -20 "$tmp/serve.log" >&2; exit 1
	fi
	sleep 0.1
done
curl -fsS -o /dev/null "$url/api/v1/health" || { tail -20 "$tmp/serve.log" >&2; exit 1; }

tck=$(getconf CLK_TCK)
# utime and stime (fields 14 and 15 of /proc/PID/stat, counted after the command's ")").
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12, $13 }' "/proc/$pid/stat"; }
status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
cpu0=$(cpu_ticks)
rss0=$(status_kb VmRSS)
t0=$(date +%s.%N)
rc=0
"$load" --url "$url" --agents "$agents" --seconds "$duration" --interval "$interval" || rc=$?
t1=$(date +%s.%N)
cpu1=$(cpu_ticks)
rss=$(status_kb VmRSS)
hwm=$(status_kb VmHWM)
threads=$(status_kb Threads)
fds=$(ls "/proc/$pid/fd" | wc -l)

echo
awk -v c0="$cpu0" -v c1="$cpu1" -v t0="$t0" -v t1="$t1" -v hz="$tck" 'BEGIN {
	split(c0, a, " "); split(c1, b, " ")
	user = (b[1] - a[1]) / hz; sys = (b[2] - a[2]) / hz; cpu = user + sys; wall = t1 - t0
	printf "server CPU: %.2f s (%.2f user + %.2f system) over %.1f s = %.1f %% of one core on average\n", cpu, user, sys, wall, 100 * cpu / wall }'
awk -v r0="$rss0" -v r="$rss" -v h="$hwm" 'BEGIN {
	printf "server memory: VmRSS %.1f MiB at the end (%.1f MiB before the agents), VmHWM %.1f MiB\n", r / 1024, r0 / 1024, h / 1024 }'
echo "server threads: $threads, open files: $fds (after agent-load exited)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

fail=0
[ "$rc" -eq 0 ] || { echo "FAIL: agent-load reported errors (exit $rc)"; fail=1; }

boards=$("$labboot" board list --json --server "$url" --token "$token" |
	jq '[.[] | select(.id | startswith("bench-"))] | length')
online=$("$labboot" board list --json --server "$url" --token "$token" |
	jq '[.[] | select((.id | startswith("bench-")) and .health == "online" and .approved)] | length')
echo "boards recorded: $boards (online and approved: $online; expected $agents)"
[ "$boards" -eq "$agents" ] || { echo "FAIL: $boards boards recorded, $agents expected"; fail=1; }
[ "$online" -eq "$agents" ] || { echo "FAIL: $online boards online, $agents expected"; fail=1; }

errors=$(grep -c -E ' (ERROR|WARN) ' "$tmp/serve.log" || true)
if [ "$errors" -gt 0 ]; then
	echo "server log: $errors warning/error lines, the first ones:"
	grep -E ' (ERROR|WARN) ' "$tmp/serve.log" | head -5
fi

# SIGTERM: the server must exit 0 within 10 s.
kill -TERM "$pid"
t=0
while [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo Z)" != Z ] && [ "$t" -lt 100 ]; do
	sleep 0.1
	t=$((t + 1))
done
if [ "$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null || echo Z)" != Z ]; then
	echo "FAIL: labboot serve still running 10 s after SIGTERM"
	tail -5 "$tmp/serve.log"
	exit 1
fi
src=0
wait "$pid" || src=$?
pid=
echo "labboot serve stopped on SIGTERM in $(awk -v t="$t" 'BEGIN { printf "%.1f", t / 10 }') s, exit status $src"
[ "$src" -eq 0 ] || { echo "FAIL: labboot serve exited $src"; tail -5 "$tmp/serve.log"; fail=1; }
exit "$fail"

#!/usr/bin/env bash
# DHCP throughput: perfdhcp against `labboot dhcp` and against kea-dhcp4 (memfile, persisted),
# in the same setup: two fresh network namespaces joined by a veth pair, created here with
# unique names and removed on exit. Prints both rates (completed 4-way exchanges per second,
# i.e. ACKs received by perfdhcp / duration) and their ratio. Not a test; needs root.
#
#   bench/dhcp/run.sh            # defaults below; override with RATE=… DURATION=… CLIENTS=…
#   LABBOOT_BIN=/path/labboot bench/dhcp/run.sh   # use a given binary instead of building one
#
# Both servers persist every lease before answering: ours with its fsynced append-only log
# (--lease-file), Kea with memfile `persist: true`. Both log at warning level only, so neither
# pays for a per-lease log line (`labboot dhcp` logs one info line per ACK by default).
set -euo pipefail

RATE=${RATE:-20000}          # offered exchanges per second (more than either server sustains)
DURATION=${DURATION:-10}     # seconds per run
CLIENTS=${CLIENTS:-30000}    # simulated clients (distinct MACs)
KEA_THREADS=${KEA_THREADS:-0} # 0: Kea's default (single-threaded); N: multi-threading with N threads

for tool in ip perfdhcp kea-dhcp4; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (scripts/setup.sh)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${LABBOOT_BIN:-}" ]; then
  target=${CARGO_TARGET_DIR:-$root/target}
  (cd "$root" && CARGO_TARGET_DIR=$target cargo build --quiet --release -p appliance --bin labboot)
  LABBOOT_BIN=$target/release/labboot
fi

tag=$$
srv=bds$tag cli=bdc$tag
work=$(mktemp -d /tmp/labboot-bench-dhcp.XXXXXX)
server_pid=

cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
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
ip -n "$srv" addr add 10.77.0.1/16 dev vs
ip -n "$cli" addr add 10.77.0.2/16 dev vc
ip -n "$srv" link set vs up
ip -n "$cli" link set vc up

wait_port67() {
  for _ in $(seq 200); do
    if ip netns exec "$srv" ss -Huln 'sport = :67' | grep -q .; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then echo "run.sh: the server died:" >&2; cat "$work/server.log" >&2; exit 1; fi
    sleep 0.05
  done
  echo "run.sh: the server does not listen on port 67" >&2; cat "$work/server.log" >&2; exit 1
}

# Runs perfdhcp once; prints "rate acks drops".
perf() {
  local out
  out=$(ip netns exec "$cli" perfdhcp -4 -l vc -r "$RATE" -R "$CLIENTS" -p "$DURATION" -W 1000000 -s 11 2>&1) || true  # non-zero when packets were dropped
  echo "$out" >"$work/perfdhcp-$1.txt"
  echo "$out" | awk -v d="$DURATION" '
    /Statistics for: REQUEST-ACK/ { s = 1 }
    s && /received packets:/ { acks = $3 }
    s && /drops:/ { drops = $2; s = 0 }
    END { printf "%.0f %d %d\n", acks / d, acks, drops }'
}

stop_server() {
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
}

# --- labboot dhcp --------------------------------------------------------------------------
ip netns exec "$srv" "$LABBOOT_BIN" --log warn dhcp --interface vs --server-ip 10.77.0.1 \
  --prefix 16 --pool 10.77.1.0-10.77.255.250 --lease-file "$work/labboot.leases" \
  --boot-file labboot/boot.scr >"$work/server.log" 2>&1 &
server_pid=$!
wait_port67
read -r ours ours_acks ours_drops < <(perf labboot)
stop_server
ours_leases=$(grep -c '^bind' "$work/labboot.leases" || true)

# --- kea-dhcp4 -------------------------------------------------------------------------------
mt=""
if [ "$KEA_THREADS" -gt 0 ]; then
  mt="\"multi-threading\": { \"enable-multi-threading\": true, \"thread-pool-size\": $KEA_THREADS, \"packet-queue-size\": 256 },"
fi
cat >"$work/kea.json" <<JSON
{ "Dhcp4": {
    "interfaces-config": { "interfaces": [ "vs" ] },
    "lease-database": { "type": "memfile", "persist": true, "name": "$work/kea-leases.csv", "lfc-interval": 0 },
    $mt
    "valid-lifetime": 3600,
    "subnet4": [ { "subnet": "10.77.0.0/16", "pools": [ { "pool": "10.77.1.0 - 10.77.255.250" } ],
                   "next-server": "10.77.0.1", "boot-file-name": "labboot/boot.scr" } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "$work/kea.log" } ] } ]
} }
JSON
KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work ip netns exec "$srv" kea-dhcp4 -c "$work/kea.json" \
  >"$work/server.log" 2>&1 &
server_pid=$!
wait_port67
read -r kea kea_acks kea_drops < <(perf kea)
stop_server
kea_leases=$(($(wc -l <"$work/kea-leases.csv") - 1))

echo "DHCP 4-way exchanges/s (perfdhcp -r $RATE -R $CLIENTS -p $DURATION, veth between two netns, $(nproc) cores)"
printf '  labboot dhcp : %6s/s  (%s ACKs, %s REQUEST drops, %s lease records)\n' "$ours" "$ours_acks" "$ours_drops" "$ours_leases"
printf '  kea-dhcp4    : %6s/s  (%s ACKs, %s REQUEST drops, %s lease records; threads: %s)\n' "$kea" "$kea_acks" "$kea_drops" "$kea_leases" "${KEA_THREADS/#0/default}"
awk -v a="$ours" -v b="$kea" 'BEGIN { if (b > 0) printf "  ratio        : %.2f x kea (goal >= 1.5)\n", a / b; else print "  ratio        : kea completed nothing" }'

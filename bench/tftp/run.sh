#!/usr/bin/env bash
# TFTP benchmark: labboot's server vs tftpd-hpa and dnsmasq, all on 127.0.0.1.
#
#   bench/tftp/run.sh            (as root: dnsmasq's TFTP only listens on port 69)
#
# One 64 MiB file, blksize 1468, windowsize 1/4/16/64, fetched with atftp (the Debian client
# that speaks RFC 7440 windowsize; curl 7.88 does not). Each case is run RUNS times and the best
# time is kept; every download is checked against the file's sha256. tftpd-hpa 5.2 and dnsmasq
# 2.90 do not implement windowsize, so for them the option is refused in the OACK and atftp
# falls back to one block per ACK. Then 200 atftp clients fetch an 8 MiB file from our server at
# once; every one must succeed with the right sha256.
#
# The ratio printed is peer time / our time: above 1 means ours is faster. For the run kept, the
# CPU seconds of the server (from /proc; ours and dnsmasq, tftpd-hpa forks a child per transfer
# that /proc does not show) and of the atftp client (from /usr/bin/time) are printed too: on a
# 2-core host both share the CPU, so the client's own cost bounds what any server can reach.
# Env: LABBOOT (default target/release/labboot), RUNS (default 5), CLIENTS (default 200).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
LABBOOT=${LABBOOT:-$here/target/release/labboot}
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-200}
HPA_PORT=${HPA_PORT:-16969}

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (run scripts/setup.sh)" >&2; exit 1; }; }
need atftp; need in.tftpd; need dnsmasq; need sha256sum; need bc
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (Debian package time)" >&2; exit 1; }
[ -x "$LABBOOT" ] || { echo "bench: $LABBOOT not built (cargo build --release -p appliance)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (dnsmasq needs port 69)" >&2; exit 1; }
if ss -Hlun 'sport = :69' | grep -q . ; then echo "bench: UDP port 69 is in use" >&2; exit 1; fi

work=$(mktemp -d /tmp/labboot-bench-tftp.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

root=$work/root
mkdir -p "$root" "$work/out"
chmod 755 "$root"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$root/big.bin"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$root/small.bin"
chmod 644 "$root"/*.bin
big_sha=$(sha256sum <"$root/big.bin" | cut -d' ' -f1)
small_sha=$(sha256sum <"$root/small.bin" | cut -d' ' -f1)

# --- servers -------------------------------------------------------------------------------
# All clients come from 127.0.0.1: the per-address cap is raised to the total one.
"$LABBOOT" tftp --root "$root" --listen 127.0.0.1:0 --max-window 64 --max-transfers 512 \
  --max-transfers-per-client 512 \
  --log info >"$work/labboot.log" 2>&1 &
pids+=($!)
ours_port=""
for _ in $(seq 100); do
  ours_port=$(sed 's/\x1b\[[0-9;]*m//g' "$work/labboot.log" | grep -o 'listening on 127.0.0.1:[0-9]*' | cut -d: -f2 || true)
  [ -n "$ours_port" ] && break
  sleep 0.05
done
[ -n "$ours_port" ] || { echo "bench: labboot tftp did not start:" >&2; cat "$work/labboot.log" >&2; exit 1; }

ours_pid=${pids[0]}
in.tftpd -L -s "$root" -a "127.0.0.1:$HPA_PORT" &
pids+=($!)
hpa_pid=$!
dnsmasq -d --conf-file=/dev/null --port=0 --enable-tftp --tftp-root="$root" \
  --listen-address=127.0.0.1 --bind-interfaces --pid-file= --log-facility=- 2>"$work/dnsmasq.log" &
pids+=($!)
dns_pid=$!
sleep 0.5

# --- single transfers ----------------------------------------------------------------------
cpu_of() { # pid -> CPU seconds so far (all threads)
  awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}

fetch() { # port server_pid window -> "seconds server_cpu client_cpu" of the best of RUNS
  local port=$1 spid=$2 window=$3 best="" bs="" bc="" t0 t1 t c0 c1 u s
  for _ in $(seq "$RUNS"); do
    rm -f "$work/out/big.bin"
    c0=$(cpu_of "$spid")
    t0=$(date +%s.%N)
    /usr/bin/time -o "$work/time" -f '%U %S' \
      atftp --option "blksize 1468" --option "windowsize $window" --option "tsize enable" \
      -g -r big.bin -l "$work/out/big.bin" 127.0.0.1 "$port" >/dev/null 2>&1 \
      || { echo "bench: atftp failed on port $port window $window" >&2; exit 1; }
    t1=$(date +%s.%N)
    c1=$(cpu_of "$spid")
    [ "$(sha256sum <"$work/out/big.bin" | cut -d' ' -f1)" = "$big_sha" ] \
      || { echo "bench: wrong sha256 from port $port window $window" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then
      best=$t
      bs=$(echo "$c1 - $c0" | bc -l)
      read -r u s <"$work/time"
      bc=$(echo "$u + $s" | bc -l)
    fi
  done
  printf '%.3f %.2f %.2f' "$best" "$bs" "$bc"
}

echo "TFTP: 64 MiB, blksize 1468, client atftp $(atftp --version 2>&1 | head -1 | awk '{print $1}'), best of $RUNS"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf '%-7s %10s %12s %10s %14s %14s   %s\n' window "ours (s)" "tftpd-hpa (s)" "dnsmasq (s)" \
  "hpa/ours" "dnsmasq/ours" "CPU s server/client: ours, dnsmasq"
for w in 1 4 16 64; do
  read -r ours ours_s ours_c <<<"$(fetch "$ours_port" "$ours_pid" "$w")"
  read -r hpa _ _ <<<"$(fetch "$HPA_PORT" "$hpa_pid" "$w")"
  read -r dns dns_s dns_c <<<"$(fetch 69 "$dns_pid" "$w")"
  printf '%-7s %10s %12s %10s %13.2fx %13.2fx   %s/%s, %s/%s\n' "$w" "$ours" "$hpa" "$dns" \
    "$(echo "$hpa / $ours" | bc -l)" "$(echo "$dns / $ours" | bc -l)" \
    "$ours_s" "$ours_c" "$dns_s" "$dns_c"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- concurrency ---------------------------------------------------------------------------
echo
echo "TFTP: $CLIENTS concurrent atftp clients, 8 MiB each, blksize 1468, window 16, ours"
t0=$(date +%s.%N)
cpids=()
for i in $(seq "$CLIENTS"); do
  atftp --option "blksize 1468" --option "windowsize 16" --tftp-timeout 2 \
    -g -r small.bin -l "$work/out/c$i.bin" 127.0.0.1 "$ours_port" >"$work/out/c$i.log" 2>&1 &
  cpids+=($!)
done
failures=0
for i in "${!cpids[@]}"; do
  if ! wait "${cpids[$i]}"; then failures=$((failures + 1)); continue; fi
  n=$((i + 1))
  [ "$(sha256sum <"$work/out/c$n.bin" | cut -d' ' -f1)" = "$small_sha" ] || failures=$((failures + 1))
done
t1=$(date +%s.%N)
busy=$(grep -c 'server busy' "$work/labboot.log" || true)
printf 'clients %d, failures %d, wall %.2f s, aggregate %.0f MiB/s, busy refusals %d\n' \
  "$CLIENTS" "$failures" "$(echo "$t1 - $t0" | bc -l)" \
  "$(echo "$CLIENTS * 8 / ($t1 - $t0)" | bc -l)" "$busy"
[ "$failures" -eq 0 ]

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
# The ratio printed is peer time / our time: above 1 means ours is faster.
# Env: LABBOOT (default target/release/labboot), RUNS (default 3), CLIENTS (default 200).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
LABBOOT=${LABBOOT:-$here/target/release/labboot}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-200}
HPA_PORT=${HPA_PORT:-16969}

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing (run scripts/setup.sh)" >&2; exit 1; }; }
need atftp; need in.tftpd; need dnsmasq; need sha256sum
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
"$LABBOOT" tftp --root "$root" --listen 127.0.0.1:0 --max-window 64 --max-transfers 512 \
  --log info >"$work/labboot.log" 2>&1 &
pids+=($!)
ours_port=""
for _ in $(seq 100); do
  ours_port=$(sed 's/\x1b\[[0-9;]*m//g' "$work/labboot.log" | grep -o 'listening on 127.0.0.1:[0-9]*' | cut -d: -f2 || true)
  [ -n "$ours_port" ] && break
  sleep 0.05
done
[ -n "$ours_port" ] || { echo "bench: labboot tftp did not start:" >&2; cat "$work/labboot.log" >&2; exit 1; }

in.tftpd -L -s "$root" -a "127.0.0.1:$HPA_PORT" &
pids+=($!)
dnsmasq -d --conf-file=/dev/null --port=0 --enable-tftp --tftp-root="$root" \
  --listen-address=127.0.0.1 --bind-interfaces --pid-file= --log-facility=- 2>"$work/dnsmasq.log" &
pids+=($!)
sleep 0.5

# --- single transfers ----------------------------------------------------------------------
fetch() { # port window -> seconds (best of RUNS), checks sha256
  local port=$1 window=$2 best="" t0 t1 t
  for _ in $(seq "$RUNS"); do
    rm -f "$work/out/big.bin"
    t0=$(date +%s.%N)
    atftp --option "blksize 1468" --option "windowsize $window" --option "tsize enable" \
      -g -r big.bin -l "$work/out/big.bin" 127.0.0.1 "$port" >/dev/null 2>&1 \
      || { echo "bench: atftp failed on port $port window $window" >&2; exit 1; }
    t1=$(date +%s.%N)
    [ "$(sha256sum <"$work/out/big.bin" | cut -d' ' -f1)" = "$big_sha" ] \
      || { echo "bench: wrong sha256 from port $port window $window" >&2; exit 1; }
    t=$(echo "$t1 - $t0" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%.3f' "$best"
}

echo "TFTP: 64 MiB, blksize 1468, client atftp $(atftp --version 2>&1 | head -1 | awk '{print $1}'), best of $RUNS"
printf '%-7s %10s %12s %10s %14s %14s\n' window "ours (s)" "tftpd-hpa (s)" "dnsmasq (s)" "hpa/ours" "dnsmasq/ours"
for w in 1 4 16 64; do
  ours=$(fetch "$ours_port" "$w")
  hpa=$(fetch "$HPA_PORT" "$w")
  dns=$(fetch 69 "$w")
  printf '%-7s %10s %12s %10s %13.2fx %13.2fx\n' "$w" "$ours" "$hpa" "$dns" \
    "$(echo "$hpa / $ours" | bc -l)" "$(echo "$dns / $ours" | bc -l)"
done

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

#!/usr/bin/env bash
# NFS benchmark: labboot's server vs nfs-ganesha (VFS FSAL), NFSv3 over TCP on loopback.
#
#   cargo build --release -p appliance && sudo bench/nfs/run.sh
#
# Everything runs inside a private network namespace made for the run (ganesha needs rpcbind on
# port 111, which must not be opened on the host). Both servers export the same directory
# read-only; the clients are libnfs's tools (Debian libnfs-utils):
# 1. read: nfs-cp of one 256 MiB file (random bytes, in the page cache) to a local file;
# 2. walk: nfs-ls -R of a 20,000-entry tree (200 directories of 100 files).
# Each case runs RUNS times and the best time is kept. Ratio = ganesha time / our time (above 1:
# ours is faster). Also printed: each server's CPU time per run of a case, and the load average.
#
# Env: LABBOOT (default $CARGO_TARGET_DIR/release/labboot or target/release/labboot), RUNS (3).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
LABBOOT=${LABBOOT:-${CARGO_TARGET_DIR:-$here/target}/release/labboot}
RUNS=${RUNS:-3}

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing" >&2; exit 1; }; }
need nfs-cp; need nfs-ls; need ganesha.nfsd; need rpcbind; need ip
[ -x "$LABBOOT" ] || { echo "bench: $LABBOOT not built (cargo build --release -p appliance)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (network namespace)" >&2; exit 1; }

ns=labboot-nfsbench-$$
work=$(mktemp -d /tmp/labboot-bench-nfs.XXXXXX)
pids=()
cleanup() {
  # Everything this run started lives in its namespace: stop exactly those processes.
  for p in $(ip netns pids "$ns" 2>/dev/null) "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 100); do
    [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
    sleep 0.1
  done
  wait 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -f /run/rpcbind.lock /run/rpcbind.sock
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
in_ns ip link set lo up

data=$work/data
mkdir -p "$data/tree"
head -c $((256 * 1024 * 1024)) /dev/urandom >"$data/big.bin"
cat "$data/big.bin" >/dev/null
for d in $(seq -w 1 200); do
  mkdir "$data/tree/d$d"
  (cd "$data/tree/d$d" && touch $(seq -f "file-%03g" 1 100))
done

# --- servers -------------------------------------------------------------------------------
if [ -e /run/rpcbind.lock ] && pgrep -x rpcbind >/dev/null; then
  echo "bench: an rpcbind is running already; stop it first" >&2
  exit 1
fi
mkdir -p /run/rpcbind
in_ns rpcbind -f -w >"$work/rpcbind.log" 2>&1 &
pids+=($!)
sleep 0.5

G_NFS=20049
G_MNT=20048
cat >"$work/ganesha.conf" <<CONF
NFS_CORE_PARAM {
  NFS_Port = $G_NFS;
  MNT_Port = $G_MNT;
  Enable_NLM = false;
  Enable_RQUOTA = false;
  Protocols = 3;
}
NFSV4 { RecoveryRoot = "$work/ganesha-recovery"; Graceless = true; }
EXPORT {
  Export_Id = 1;
  Path = "$data";
  Pseudo = "/data";
  Access_Type = RO;
  Squash = No_Root_Squash;
  Protocols = 3;
  Transports = TCP;
  SecType = sys;
  FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
CONF
mkdir -p "$work/ganesha-recovery"
# Inside the namespace only loopback exists, so ganesha's default bind address (any) is loopback.
in_ns ganesha.nfsd -F -f "$work/ganesha.conf" -L "$work/ganesha.log" -p "$work/ganesha.pid" \
  >"$work/ganesha.out" 2>&1 &
pids+=($!)

in_ns "$LABBOOT" nfs --listen 127.0.0.1:20050 --export "/data=$data:ro" --log warn,netboot::nfs::server=info \
  >"$work/labboot.log" 2>&1 &
pids+=($!)

# NFSv3 clients of ganesha mount the export's Path (Pseudo is for NFSv4); ours is named /data.
url() { # nfs-port mount-port path-below-export
  local base=/data
  [ "$1" = "$G_NFS" ] && base=$data
  echo "nfs://127.0.0.1$base$3?version=3&nfsport=$1&mountport=$2"
}
ready() { # nfs-port mount-port
  for _ in $(seq 300); do
    if in_ns nfs-ls "$(url "$1" "$2" "")" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench: no NFS server answers on port $1" >&2
  cat "$work"/*.log >&2
  exit 1
}
ready 20050 20050
ready $G_NFS $G_MNT
# The servers' own pids (the ones above are the shells that started them).
g_pid=$(cat "$work/ganesha.pid")
l_pid=$(in_ns ss -ltnpH 'sport = :20050' | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)

best() { # command...: best wall time of RUNS runs, in seconds
  local best="" t
  for _ in $(seq "$RUNS"); do
    local s e
    s=$(date +%s.%N)
    "$@" >/dev/null
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" -eq 1 ]; then best=$t; fi
  done
  printf '%.3f' "$best"
}

read_big() { rm -f "$work/out.bin"; in_ns nfs-cp "$(url "$1" "$2" /big.bin)" "$work/out.bin"; }
check_read() { # both servers must have delivered the same bytes
  read_big "$1" "$2"
  cmp -s "$work/out.bin" "$data/big.bin" || { echo "bench: read from port $1 differs" >&2; exit 1; }
  rm -f "$work/out.bin"
}
walk() {
  local n
  n=$(in_ns nfs-ls -R "$(url "$1" "$2" /tree)" | wc -l)
  [ "$n" -eq 20200 ] || { echo "bench: walk listed $n entries, not 20200" >&2; exit 1; }
}

check_read 20050 20050
check_read $G_NFS $G_MNT
# Server CPU time (user + system of all its threads, from /proc) over the RUNS runs of a case,
# per run, in ms: steadier than wall times on a shared machine.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
cpu_ms() { echo "($2 - $1) * 1000 / $hz / $RUNS" | bc; }
t0=$(ticks "$l_pid"); ours_read=$(best read_big 20050 20050); t1=$(ticks "$l_pid")
ours_read_cpu=$(cpu_ms "$t0" "$t1")
t0=$(ticks "$g_pid"); g_read=$(best read_big $G_NFS $G_MNT); t1=$(ticks "$g_pid")
g_read_cpu=$(cpu_ms "$t0" "$t1")
t0=$(ticks "$l_pid"); ours_walk=$(best walk 20050 20050); t1=$(ticks "$l_pid")
ours_walk_cpu=$(cpu_ms "$t0" "$t1")
t0=$(ticks "$g_pid"); g_walk=$(best walk $G_NFS $G_MNT); t1=$(ticks "$g_pid")
g_walk_cpu=$(cpu_ms "$t0" "$t1")

ratio() { printf '%.2f' "$(echo "$2 / $1" | bc -l)"; }
echo "| case | ours (s) | ganesha (s) | ganesha / ours | server CPU ms per run: ours / ganesha |"
echo "|---|---:|---:|---:|---:|"
echo "| read 256 MiB (nfs-cp) | $ours_read | $g_read | $(ratio "$ours_read" "$g_read")× | $ours_read_cpu / $g_read_cpu |"
echo "| walk 20,200 entries (nfs-ls -R) | $ours_walk | $g_walk | $(ratio "$ours_walk" "$g_walk")× | $ours_walk_cpu / $g_walk_cpu |"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

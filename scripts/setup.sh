#!/usr/bin/env bash
# Installs what labboot's build, tests and demo need on Debian 12. Idempotent and quiet when
# nothing is missing; uses the host's own apt configuration.
set -euo pipefail

# Debian packages: tools of the test peers, U-Boot and QEMU for the virtual lab.
packages=(
  # build
  build-essential pkg-config
  # virtual lab: the board
  qemu-system-arm u-boot-qemu iproute2
  # U-Boot script images and the SD card
  u-boot-tools dosfstools mtools
  # boot payloads
  busybox-static
  # TFTP peers
  tftp-hpa atftp curl tftpd-hpa dnsmasq-base
  # DHCP peers
  kea-admin kea-dhcp4-server udhcpc
  # NBD peers
  libnbd-bin nbdkit python3-libnbd qemu-utils
  # image building: peers and benchmark baselines
  squashfs-tools erofs-utils e2fsprogs cpio mmdebstrap
  # NFS peers (nfs-ganesha and rpcbind: the NFS benchmark's baseline)
  libnfs-utils nfs-ganesha nfs-ganesha-vfs rpcbind
  # dispatcher: the compressors jobs' files come in, git for test definitions, dash and busybox
  # (above) to run the board-side scripts on the host
  xz-utils zstd bzip2 git dash tar
  # the Debian package (make deb: dpkg-shlibdeps, strip) and its test (lintian; mmdebstrap above
  # makes the Debian 12 root it installs into)
  dpkg-dev binutils lintian
  # the appliance's /metrics: promtool checks the exposition format
  prometheus
  # the web dashboard's browser test: headless Chromium driven by chromedriver
  chromium chromium-driver
  # the appliance VM image (make vm-test): boots under KVM with OVMF; sfdisk checks its GPT
  qemu-system-x86 ovmf fdisk
  # the appliance's shared store: its tests start their own PostgreSQL (initdb + pg_ctl from
  # /usr/lib/postgresql/*/bin) in a temporary directory, as the package's `postgres` user
  postgresql
)

find_missing() {
  missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
      missing+=("$p")
    fi
  done
}

find_missing
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >/dev/null
  # Daemons from peer packages (tftpd-hpa, kea) must not keep running: tests start their own.
  $sudo env RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  # An install can remove a package of the list that was there before: a machine image with
  # a backported qemu-utils loses it when Debian 12's qemu-system-arm comes in (their shared
  # qemu packages must be of one version). A second pass brings back what went.
  find_missing
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing again what the first install removed: ${missing[*]}"
    $sudo env RUNLEVEL=1 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    find_missing
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "setup: apt could not install ${missing[*]} alongside the rest" >&2
      exit 1
    fi
  fi
  for svc in tftpd-hpa kea-dhcp4-server prometheus postgresql; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
  # nfs-ganesha and rpcbind are enabled at install and would hold the host's ports 2049 and 111
  # from every boot on; the benchmark starts its own inside a network namespace.
  for svc in nfs-ganesha rpcbind.socket rpcbind; do
    if command -v systemctl >/dev/null && systemctl is-enabled --quiet "$svc" 2>/dev/null; then
      $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
  done
  pkill -x in.tftpd 2>/dev/null || true
  pkill -x kea-dhcp4 2>/dev/null || true
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# --- imagebuilder: Debian packages of the board architectures (arm64) through apt -------------
# `labboot image build` and its tests fetch arm64 packages with the host's own apt configuration;
# dpkg must know the architecture and apt must have its package lists. Quiet when both are there.
if ! dpkg --print-foreign-architectures | grep -qx arm64 && [ "$(dpkg --print-architecture)" != arm64 ]; then
  echo "setup: adding the arm64 architecture to dpkg"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo dpkg --add-architecture arm64
fi
if [ "$(dpkg --print-architecture)" != arm64 ] &&
  ! ls /var/lib/apt/lists/*_binary-arm64_Packages* >/dev/null 2>&1; then
  echo "setup: fetching apt's arm64 package lists"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q >/dev/null
fi
# kmod's modinfo: the tests check imagebuilder's modules.dep against it.
if ! command -v modinfo >/dev/null && [ ! -x /usr/sbin/modinfo ] && [ ! -x /sbin/modinfo ]; then
  echo "setup: installing kmod"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kmod >/dev/null
fi

# --- fuzzing: cargo-fuzz for `make fuzz-smoke` (libFuzzer targets under fuzz/) ------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "setup: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

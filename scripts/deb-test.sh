#!/usr/bin/env bash
# The Debian package's test (tests/tests/debian_package.rs runs it in `make test`; `make deb-test`
# alone). Needs root (chroot, mounts), mmdebstrap and lintian (scripts/setup.sh).
#  1. builds the package (scripts/deb.sh) into target/debian/test/, twice: same sha256;
#  2. lintian: no error (every tag is printed);
#  3. a throwaway Debian 12 root (mmdebstrap minbase + systemd, the host's apt sources and
#     network settings; the tarball is cached under target/debian/chroot/, one per day and
#     sources); inside it: apt installs the .deb with its dependencies, `labboot --version`
#     runs, `systemd-analyze verify` passes on the installed unit, the user, state directory,
#     config permissions, enabled unit, man pages and completions are there, the template
#     config fails --check and the unit's condition skips it; `apt purge` leaves nothing behind.
#   LABBOOT_DEB=FILE          test this .deb instead of building one
#   LABBOOT_DEB_BINARY=PATH   build the package around this binary (see scripts/deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export LC_ALL=C

if [ "$(id -u)" -ne 0 ]; then
  echo "deb-test: NOT RUN: the package test needs root (a chroot with mounts); run it as root" >&2
  exit 1
fi
for tool in mmdebstrap lintian dpkg-deb unshare; do
  command -v "$tool" >/dev/null || {
    echo "deb-test: needs $tool (run scripts/setup.sh)" >&2
    exit 1
  }
done

t0=$(date +%s)
step_start=$t0
step() {
  local now
  now=$(date +%s)
  echo "deb-test: [$((now - step_start)) s] $1"
  step_start=$now
}
fail() {
  echo "deb-test: FAILED: $*" >&2
  exit 1
}

work=$(mktemp -d /tmp/labboot-deb-test.XXXXXX)
chroot_dir=$work/root
cleanup() {
  # The mounts live in a private mount namespace (unshare -m) and are gone with it;
  # --one-file-system would still keep rm out of one left behind.
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# --- 1. the package, twice -----------------------------------------------------------------
if [ -n "${LABBOOT_DEB:-}" ]; then
  deb=$(cd "$(dirname "$LABBOOT_DEB")" && pwd)/$(basename "$LABBOOT_DEB")
  step "testing $deb"
else
  # One copy of the binary for both builds: another build may replace target/*/labboot meanwhile.
  if [ -z "${LABBOOT_DEB_BINARY:-}" ]; then
    cargo build --quiet --release -p appliance --bin labboot
    LABBOOT_DEB_BINARY=target/release/labboot
  fi
  cp "$LABBOOT_DEB_BINARY" "$work/labboot"
  export LABBOOT_DEB_BINARY=$work/labboot
  # One epoch for both builds too (a commit in between would change deb.sh's default).
  if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y Cargo.lock)
  fi
  export SOURCE_DATE_EPOCH
  rm -rf target/debian/test
  deb=$(LABBOOT_DEB_OUT=target/debian/test/a bash scripts/deb.sh | tail -n 1)
  step "built $deb"
  again=$(LABBOOT_DEB_OUT=target/debian/test/b bash scripts/deb.sh | tail -n 1)
  a=$(sha256sum <"$deb" | cut -d' ' -f1)
  b=$(sha256sum <"$again" | cut -d' ' -f1)
  [ "$a" = "$b" ] || fail "two builds differ: $a and $b"
  rm -rf target/debian/test/b
  step "built again: same sha256 $a"
fi

# --- 2. lintian ----------------------------------------------------------------------------
# Every tag is printed; lintian exits non-zero on an error (or when it cannot run).
lintian_out=$work/lintian.txt
lintian_rc=0
lintian --allow-root --tag-display-limit 0 --display-level '>=info' "$deb" >"$lintian_out" 2>&1 || lintian_rc=$?
sed 's/^/deb-test: lintian: /' "$lintian_out"
if [ "$lintian_rc" -ne 0 ] || grep -q '^E: ' "$lintian_out"; then
  fail "lintian reports errors (exit $lintian_rc)"
fi
step "lintian: $(grep -c '^E: ' "$lintian_out" || true) errors, $(grep -c '^W: ' "$lintian_out" || true) warnings"

tree=$work/tree
dpkg-deb -x "$deb" "$tree"
[ -f "$tree/lib/systemd/system/labboot.service" ] || fail "no /lib/systemd/system/labboot.service in the package"
[ -f "$tree/usr/bin/labboot" ] || fail "no /usr/bin/labboot in the package"
rm -rf "$tree"

# --- 3. a throwaway Debian 12 root ---------------------------------------------------------
# The host's apt sources, and its apt settings that are network ones only (proxies, release
# file checks): no mirror is named here.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -Eq '^[[:space:]]*(deb|Types:)' "$f" && sources+=("$f")
done
[ "${#sources[@]}" -gt 0 ] || fail "the host has no apt sources"
aptopts=()
for f in /etc/apt/apt.conf /etc/apt/apt.conf.d/*; do
  [ -f "$f" ] || continue
  if grep -Evq '^[[:space:]]*($|//|#)' "$f" && ! grep -Ev '^[[:space:]]*($|//|#)' "$f" | grep -Evq '^[[:space:]]*Acquire::'; then
    aptopts+=("--aptopt=$f")
  fi
done
key=$( (echo bookworm minbase systemd; mmdebstrap --version; cat "${sources[@]}") | sha256sum | cut -c1-12)
for opt in "${aptopts[@]}"; do key=$( (echo "$key"; cat "${opt#--aptopt=}") | sha256sum | cut -c1-12); done
cache_dir=$root/target/debian/chroot
tarball=$cache_dir/bookworm-minbase-$(date -u +%Y%m%d)-$key.tar
if [ ! -f "$tarball" ]; then
  mkdir -p "$cache_dir"
  rm -rf "$cache_dir"/bookworm-minbase-*.tar "$cache_dir"/.new-*.tar "$cache_dir/archives"
  # systemd: for `systemd-analyze verify` of the installed unit (labboot does not depend on it).
  mmdebstrap --quiet --variant=minbase --include=systemd --skip=cleanup/apt/lists "${aptopts[@]}" \
    bookworm "$cache_dir/.new-$key.tar" "${sources[@]}" || fail "mmdebstrap"
  mv "$cache_dir/.new-$key.tar" "$tarball"
  step "mmdebstrap: new root $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
else
  step "mmdebstrap: cached root $(basename "$tarball")"
fi
mkdir -p "$chroot_dir" "$cache_dir/archives/partial"
tar -C "$chroot_dir" -xf "$tarball"
cp "$deb" "$chroot_dir/tmp/"
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf" 2>/dev/null || true
step "unpacked the root"

cat >"$chroot_dir/tmp/inside.sh" <<'EOF'
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
fail() { echo "deb-test: FAILED (inside): $*" >&2; exit 1; }
deb=$(ls /tmp/labboot_*.deb)
# As an admin would: apt resolves Depends (present in any root with apt) and Recommends (git,
# fetched from the host's mirror; the downloads are cached with the root).
! dpkg -s git >/dev/null 2>&1 || fail "git is in the root already: the test would not see apt fetch it"
apt-get install -y -q "$deb" >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt install"; }
dpkg -s git 2>/dev/null | grep -q '^Status: install ok installed' || fail "apt did not install the recommended git"
echo "deb-test: installed with apt ($(grep -c '^Unpacking' /tmp/apt.log) packages unpacked: labboot and what it recommends)"
labboot --version | grep -Eq '^labboot [0-9]' || fail "labboot --version"
echo "deb-test: $(labboot --version)"
getent passwd labboot >/dev/null || fail "no labboot user"
getent group labboot >/dev/null || fail "no labboot group"
[ "$(stat -c %U:%G:%a /var/lib/labboot)" = labboot:labboot:750 ] || fail "/var/lib/labboot: $(stat -c %U:%G:%a /var/lib/labboot)"
[ "$(stat -c %U:%G:%a /etc/labboot/appliance.yaml)" = root:labboot:640 ] || fail "appliance.yaml: $(stat -c %U:%G:%a /etc/labboot/appliance.yaml)"
[ -L /etc/systemd/system/multi-user.target.wants/labboot.service ] || fail "labboot.service not enabled"
for f in /usr/share/man/man1/labboot.1.gz /usr/share/man/man1/labboot-serve.1.gz \
  /usr/share/bash-completion/completions/labboot /usr/share/zsh/vendor-completions/_labboot \
  /usr/share/fish/vendor_completions.d/labboot.fish /usr/share/doc/labboot/copyright \
  /usr/share/labboot/device-types/labboot-uboot.jinja2 /usr/share/labboot/recipes/master-arm64.yaml \
  /usr/share/labboot/recipes/labboot-agent.sh; do
  [ -s "$f" ] || fail "$f is missing"
done
# The unit, as installed: systemd-analyze verify (man pages are checked as files above).
systemd-analyze verify --man=no labboot.service >/tmp/verify.txt 2>&1 || { cat /tmp/verify.txt; fail "systemd-analyze verify labboot.service"; }
[ ! -s /tmp/verify.txt ] || { cat /tmp/verify.txt; fail "systemd-analyze verify labboot.service printed warnings"; }
echo "deb-test: systemd-analyze verify labboot.service: clean"
# The packaged device types render a dictionary and a job validates against it (as the unit
# runs labboot: LABBOOT_DEVICE_TYPES names them).
mkdir -p /tmp/dv
cat >/tmp/dv/board.jinja2 <<'DICT'
{% extends 'labboot-uboot.jinja2' %}
{% set console_device = 'ttyS0' %}
{% set connection_command = 'telnet ser2net 7001' %}
{% set power_on_command = 'true' %}
{% set power_off_command = 'true' %}
{% set board_id = 'board-01' %}
DICT
cat >/tmp/dv/job.yaml <<'JOB'
device_type: labboot-uboot
job_name: package check
timeouts:
  job: {minutes: 10}
actions:
- test:
    definitions:
    - from: inline
      name: smoke
      path: inline/smoke.yaml
      repository:
        metadata: {format: Lava-Test Test Definition 1.0, name: smoke, description: check}
        run:
          steps:
          - lava-test-case kernel --shell uname -a
JOB
LABBOOT_DEVICE_TYPES=/usr/share/labboot/device-types labboot dispatch --device /tmp/dv/board.jinja2 \
  /tmp/dv/job.yaml --output-dir /tmp/dv/out --validate >/tmp/dv/validate.txt 2>&1 ||
  { cat /tmp/dv/validate.txt; fail "labboot dispatch --validate with the packaged device types"; }
echo "deb-test: packaged device types: $(cat /tmp/dv/validate.txt)"
# The template config: --check fails and says what to do first; the unit's condition skips it.
if labboot serve --config /etc/labboot/appliance.yaml --check 2>/tmp/check.err; then fail "--check passed on the template"; fi
grep -q 'http.tokens: give at least one API token' /tmp/check.err || fail "--check said: $(cat /tmp/check.err)"
echo "deb-test: template config: $(cat /tmp/check.err)"
cond=$(sed -n 's/^ExecCondition=//p' /lib/systemd/system/labboot.service | sed 's/\$\$/$/g')
if eval "$cond"; then fail "the unit's ExecCondition passes on the template"; fi
printf 'http:\n  tokens: [a-long-enough-token]\n' >>/etc/labboot/appliance.yaml
eval "$cond" || fail "the unit's ExecCondition fails on an edited config"
apt-get purge -y -q labboot >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; fail "apt purge"; }
! dpkg -s labboot >/dev/null 2>&1 || fail "labboot still known to dpkg after purge"
for p in /usr/bin/labboot /etc/labboot /var/lib/labboot /usr/share/labboot /usr/share/doc/labboot \
  /lib/systemd/system/labboot.service /etc/systemd/system/multi-user.target.wants/labboot.service; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p is left after purge"
done
! dpkg-statoverride --list /etc/labboot/appliance.yaml >/dev/null 2>&1 || fail "statoverride left after purge"
left=$(find /etc/systemd /var/lib/systemd -name '*labboot*' 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
echo "deb-test: purged: nothing left (the labboot system user stays, as documented)"
EOF

unshare --mount --fork -- sh -c '
  set -e
  r=$1
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"
  mount -t sysfs sys "$r/sys"
  mount --bind "$2" "$r/var/cache/apt/archives"
  chroot "$r" /bin/sh /tmp/inside.sh
' sh "$chroot_dir" "$cache_dir/archives" || fail "inside the Debian 12 root"
step "install, checks and purge in the Debian 12 root"
echo "deb-test: OK in $(($(date +%s) - t0)) s"

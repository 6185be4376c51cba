#!/bin/sh
# labboot appliance VM, first boot: reads the lab network settings and writes
# /etc/labboot/appliance.yaml and the lab interface's systemd-networkd file, before the network
# and labboot.service start.
#
# Where the settings come from, later ones winning:
#   1. a config drive: a FAT or ISO 9660 filesystem labelled LABBOOT, with
#      - labboot.conf: KEY=VALUE lines ('#' starts a comment), the keys below; or
#      - appliance.yaml: a whole appliance config, installed as it is (the lab interface's
#        address then comes from labboot.conf's address= or the kernel command line);
#   2. the kernel command line: labboot.KEY=VALUE.
# Keys: interface (a name like ens4, or the NIC's MAC address), address (the appliance on the
# lab network, CIDR: 10.78.0.1/24), pool (the boards' DHCP range: 10.78.0.100-10.78.0.199),
# token (the API token, 8 or more characters), http_listen (default 0.0.0.0:8080),
# root_password_hash (root's password as crypt(3) makes it, e.g. `openssl passwd -6`; root's
# login is locked otherwise).
#
# Runs once: when it has written the config it leaves /var/lib/labboot-firstboot.done (delete it
# to run again at the next boot). With no drive and no labboot.* settings it changes nothing.
set -eu

say() { echo "labboot-firstboot: $*"; }
die() {
	say "$*"
	say "the appliance is not configured; labboot.service stays stopped"
	exit 1
}

conf=$(mktemp)
drive=/run/labboot-firstboot/drive
yaml=
source=
trap 'umount "$drive" 2>/dev/null || true; rm -f "$conf"' EXIT

# The drive may take a moment to show up after the root disk.
dev=
n=0
while [ -z "$dev" ] && [ "$n" -lt 30 ]; do
	dev=$(blkid -L LABBOOT 2>/dev/null || true)
	[ -n "$dev" ] || sleep 0.2
	n=$((n + 1))
done
if [ -n "$dev" ]; then
	mkdir -p "$drive"
	mount -o ro "$dev" "$drive" || die "config drive $dev (LABBOOT): cannot mount it"
	source="config drive $dev"
	[ -f "$drive/labboot.conf" ] && cat "$drive/labboot.conf" >>"$conf"
	if [ -f "$drive/appliance.yaml" ]; then
		yaml=$(mktemp)
		cp "$drive/appliance.yaml" "$yaml"
	fi
	[ -f "$drive/labboot.conf" ] || [ -n "$yaml" ] ||
		die "config drive $dev (LABBOOT) has neither labboot.conf nor appliance.yaml"
fi
echo >>"$conf"
from_cmdline=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	labboot.interface=* | labboot.address=* | labboot.pool=* | labboot.token=* | labboot.http_listen=* | labboot.root_password_hash=*)
		echo "${arg#labboot.}" >>"$conf"
		from_cmdline=yes
		;;
	esac
done
[ -n "$from_cmdline" ] && source="${source:+$source and }the kernel command line"
if [ -z "$source" ]; then
	say "no LABBOOT config drive and no labboot.* settings on the kernel command line: nothing to do"
	exit 0
fi
say "settings from $source"

# The last value of KEY, blanks around it trimmed.
get() {
	sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$conf" | sed 's/[[:space:]]*$//' | tail -n 1
}
for key in $(sed -n 's/^[[:space:]]*\([A-Za-z_]*\)[[:space:]]*=.*/\1/p' "$conf"); do
	case "$key" in
	interface | address | pool | token | http_listen | root_password_hash) ;;
	*) die "labboot.conf: unknown key $key (keys: interface, address, pool, token, http_listen, root_password_hash)" ;;
	esac
done
interface=$(get interface)
address=$(get address)
pool=$(get pool)
token=$(get token)
http_listen=$(get http_listen)
root_password_hash=$(get root_password_hash)
[ -n "$http_listen" ] || http_listen=0.0.0.0:8080

[ -n "$interface" ] || die "interface: missing (the lab NIC's name, e.g. ens4, or its MAC address)"
case "$interface" in
*:*:*:*:*:*)
	mac=$(echo "$interface" | tr 'A-F' 'a-f')
	interface=
	for d in /sys/class/net/*; do
		[ "$(cat "$d/address" 2>/dev/null)" = "$mac" ] && interface=${d##*/}
	done
	[ -n "$interface" ] || die "interface: no NIC has the MAC address $mac"
	;;
esac
[ -e "/sys/class/net/$interface" ] ||
	die "interface: no NIC named $interface (NICs: $(ls /sys/class/net | tr '\n' ' '))"
echo "$address" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$' ||
	die "address: ${address:-missing}: give the appliance's lab address as A.B.C.D/PREFIX"
ip=${address%/*}

if [ -z "$yaml" ]; then
	echo "$pool" | grep -Eq '^([0-9]{1,3}\.){3}[0-9]{1,3}-([0-9]{1,3}\.){3}[0-9]{1,3}$' ||
		die "pool: ${pool:-missing}: give the boards' DHCP range as A.B.C.D-A.B.C.E"
	[ "${#token}" -ge 8 ] || die "token: missing or shorter than 8 characters"
	case "$token" in
	*[!A-Za-z0-9._~+-]*) die "token: use letters, digits and . _ ~ + - only" ;;
	esac
	yaml=$(mktemp)
	cat >"$yaml" <<EOF
# Written by labboot-firstboot from $source. Edit freely: it is not rewritten
# (delete /var/lib/labboot-firstboot.done to run the first-boot step again).
# Every key: /usr/share/doc/labboot/examples/appliance.yaml and man labboot-serve.
server_ip: $ip
state_dir: /var/lib/labboot
http:
  listen: $http_listen
  tokens:
    - $token
master:
  dir: /usr/share/labboot/master
dhcp:
  interface: $interface
  server_ip: $ip
  pool: $pool
  lease_file: /var/lib/labboot/leases.log
tftp:
  root: /var/lib/labboot/tftp
  listen: $ip:69
nbd:
  listen: $ip:10809
nfs:
  listen: $ip:2049
  portmap: $ip:111
EOF
fi

if ! out=$(LABBOOT_DEVICE_TYPES=/usr/share/labboot/device-types labboot serve --config "$yaml" --check 2>&1); then
	echo "$out" | sed 's/^/labboot-firstboot: /'
	rm -f "$yaml"
	die "the config from $source does not pass labboot serve --check"
fi

install -d -m 0755 /etc/systemd/network
cat >/etc/systemd/network/10-labboot-lab.network <<EOF
# The lab network (labboot-firstboot, from $source): a fixed address, no DHCP client.
[Match]
Name=$interface

[Network]
Address=$address
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
EOF
install -d -m 0750 -o labboot -g labboot /var/lib/labboot /var/lib/labboot/tftp
install -m 0640 -o root -g labboot "$yaml" /etc/labboot/appliance.yaml
rm -f "$yaml"
if [ -n "$root_password_hash" ]; then
	usermod -p "$root_password_hash" root || die "root_password_hash: usermod refused it"
	say "root's password set"
fi
echo "$source" >/var/lib/labboot-firstboot.done
say "lab interface $interface at $address; /etc/labboot/appliance.yaml written"

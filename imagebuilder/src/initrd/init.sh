#!/bin/sh
# labboot initrd /init: network up by DHCP, root attached read-only (NBD or NFS), overlayfs
# with a tmpfs upper layer, switch_root. On any failure: one line naming the step, then a shell.
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

step=start
fail() {
	echo "labboot-initrd: step $step failed: $*"
	echo "labboot-initrd: dropping to a shell"
	exec sh </dev/console >/dev/console 2>&1
}

board=
root=
agent=
token=
interval=
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	labboot.board=*) board=${arg#labboot.board=} ;;
	labboot.root=*) root=${arg#labboot.root=} ;;
	labboot.agent=*) agent=${arg#labboot.agent=} ;;
	labboot.token=*) token=${arg#labboot.token=} ;;
	labboot.interval=*) interval=${arg#labboot.interval=} ;;
	esac
done
# They end up single-quoted in /run/labboot/env: no quote in the token, digits in the interval.
case "$token" in *"'"*) token=$(echo "$token" | tr -d "'") ;; esac
case "$interval" in *[!0-9]*) interval= ;; esac

step=cmdline
[ -n "$root" ] || fail "no labboot.root= on the kernel command line"

# labboot.root=ramdisk: the initramfs is the system (a test job's ramdisk deploy): a shell on
# the console, with whatever the job added to the archive (its test overlay under /lava-*).
if [ "$root" = ramdisk ]; then
	echo "labboot-initrd: root is the ramdisk: shell on the console"
	export HOME=/root PS1='labboot-ramdisk# '
	mkdir -p /root /tmp
	command -v cttyhack >/dev/null 2>&1 && exec setsid cttyhack sh -i
	exec sh -i </dev/console >/dev/console 2>&1
fi

step=modules
# The NFS client stack is loaded only for an NFS root: it is a third of the modules' load time.
load_modules() {
	while read -r m; do
		[ -n "$m" ] || continue
		insmod "$m" || fail "insmod $m"
	done <"$1"
}
load_modules /etc/labboot/modules
case "$root" in
nfs:*) load_modules /etc/labboot/modules.nfs ;;
esac

# labboot.root=disk:LABEL=…|UUID=…: a local ext4 root (the appliance VM). Mounted read-only
# as distributions do: systemd checks it and remounts it read-write from /etc/fstab.
case "$root" in
disk:*)
	step=root
	spec=${root#disk:}
	dev=
	tries=0
	while [ -z "$dev" ] && [ "$tries" -lt 100 ]; do
		dev=$(findfs "$spec" 2>/dev/null)
		[ -n "$dev" ] || sleep 0.1
		tries=$((tries + 1))
	done
	[ -n "$dev" ] || fail "no disk has $spec (labboot.root=$root)"
	mkdir -p /newroot
	mount -t ext4 -o ro "$dev" /newroot || fail "mount $dev ($spec) read-only"
	echo "labboot-initrd: root $dev ($spec)"
	step=switch_root
	mount --move /dev /newroot/dev || fail "mount --move /dev"
	umount /sys
	umount /proc
	exec switch_root /newroot /sbin/init
	;;
esac

step=network
iface=
tries=0
while [ -z "$iface" ] && [ "$tries" -lt 50 ]; do
	for d in /sys/class/net/*; do
		n=${d##*/}
		[ "$n" = lo ] && continue
		iface=$n
		break
	done
	[ -n "$iface" ] || sleep 0.1
	tries=$((tries + 1))
done
[ -n "$iface" ] || fail "no network interface appeared"
ip link set lo up
ip link set "$iface" up || fail "ip link set $iface up"
set -- -i "$iface" -n -q -t 10 -T 2 -s /etc/labboot/udhcpc.script
[ -n "$board" ] && set -- "$@" -V "labboot:$board"
udhcpc "$@" || fail "no DHCP lease on $iface"

step=root
mkdir -p /lower /rw /newroot
case "$root" in
nbd:*)
	spec=${root#nbd:}
	host=${spec%%:*}
	rest=${spec#*:}
	port=${rest%%/*}
	export=${rest#*/}
	[ "$host" != "$spec" ] && [ "$port" != "$rest" ] || fail "labboot.root=$root is not nbd:HOST:PORT/EXPORT"
	nbd-client "$host" "$port" /dev/nbd0 -N "$export" -R || fail "nbd-client $host $port -N $export"
	mount -t squashfs -o ro /dev/nbd0 /lower 2>/dev/null ||
		mount -t ext4 -o ro,noload /dev/nbd0 /lower || fail "mount /dev/nbd0 read-only"
	lower="nbd:$host:$port/$export"
	;;
nfs:*)
	spec=${root#nfs:}
	host=${spec%%:*}
	path=${spec#*:}
	[ "$host" != "$spec" ] && [ -n "$host" ] && [ "${path#/}" != "$path" ] ||
		fail "labboot.root=$root is not nfs:HOST:/PATH"
	# busybox's mount hands the options to the kernel as text, so they carry the server's address;
	# the kernel asks the server's portmapper (port 111) for the NFS and MOUNT ports over TCP.
	mount -t nfs -o "ro,nolock,vers=3,proto=tcp,mountproto=tcp,addr=$host" "$host:$path" /lower ||
		fail "mount nfs $spec read-only"
	lower="nfs:$spec"
	;;
*) fail "labboot.root=$root is not nbd:HOST:PORT/EXPORT, nfs:HOST:/PATH, disk:LABEL=… or ramdisk" ;;
esac

step=overlay
# labboot.overlay=tmpfs (default): changes live in a tmpfs over the read-only root.
# labboot.overlay=none: an NFS root is remounted read-write and used as it is (a per-job export).
overlay=tmpfs
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	labboot.overlay=*) overlay=${arg#labboot.overlay=} ;;
	esac
done
mount -t tmpfs -o mode=0755 tmpfs /rw || fail "mount tmpfs"
case "$overlay" in
tmpfs)
	mkdir -p /rw/upper /rw/work
	mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
		fail "mount overlay"
	;;
none)
	case "$lower" in
	nfs:*) ;;
	*) fail "labboot.overlay=none needs an nfs: root, not $lower" ;;
	esac
	mount -o remount,rw /lower || fail "remount $lower read-write"
	mount --bind /lower /newroot || fail "mount --bind /lower /newroot"
	# Per-boot state (/run/labboot/env) stays off the export.
	mkdir -p /newroot/run || fail "mkdir /newroot/run"
	mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "mount tmpfs on /newroot/run"
	;;
*) fail "labboot.overlay=$overlay is neither tmpfs nor none" ;;
esac

step=switch_root
# A test overlay carried in the initrd (/lava-<job>) goes into the root the job boots.
for d in /lava-*; do
	[ -d "$d" ] || continue
	cp -a "$d" /newroot/ || fail "copy the test overlay $d into the root"
done
mkdir -p /newroot/run/labboot/lower /newroot/run/labboot/rw /newroot/dev /newroot/etc
mount --move /lower /newroot/run/labboot/lower || fail "mount --move /lower"
mount --move /rw /newroot/run/labboot/rw || fail "mount --move /rw"
# The env file carries the board's token: readable by root only.
rm -f /newroot/run/labboot/env
umask_was=$(umask)
umask 077
{
	echo "LABBOOT_BOARD='$board'"
	echo "LABBOOT_ROOT='$lower'"
	echo "LABBOOT_AGENT='$agent'"
	echo "LABBOOT_IFACE='$iface'"
	echo "LABBOOT_TOKEN='$token'"
	echo "LABBOOT_AGENT_INTERVAL='$interval'"
} >/newroot/run/labboot/env
umask "$umask_was"
[ -f /etc/resolv.conf ] && cp /etc/resolv.conf /newroot/etc/resolv.conf
mount --move /dev /newroot/dev || fail "mount --move /dev"
umount /sys
umount /proc
exec switch_root /newroot /sbin/init
echo "labboot-initrd: step switch_root failed: exec switch_root /newroot /sbin/init"
exec sh

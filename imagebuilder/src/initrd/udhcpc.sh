#!/bin/sh
# udhcpc event script of the labboot initrd: applies the lease, the default route and DNS.
case "$1" in
deconfig)
	ip addr flush dev "$interface"
	ip link set "$interface" up
	;;
bound | renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	for r in $router; do
		ip route add default via "$r" dev "$interface"
		break
	done
	: >/etc/resolv.conf
	for d in $dns; do
		echo "nameserver $d" >>/etc/resolv.conf
	done
	echo "labboot-initrd: $interface has $ip/${mask:-24} (server ${serverid:-?})"
	;;
esac
exit 0

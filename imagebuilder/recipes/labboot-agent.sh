#!/bin/sh
# labboot agent: checks in to the appliance (labboot.agent= on the kernel command line) with
# this board's identity, then again every LABBOOT_AGENT_INTERVAL seconds. Started by init
# (respawn), so it never exits on a network error: it logs state changes and retries.
#
# The request is written by hand and sent with busybox nc: Debian's busybox-static wget crashes
# (static glibc looking up services through NSS), nc with a numeric port does not. The agent
# URL must therefore be http://ADDRESS[:PORT][/PREFIX] with a numeric address.
[ -r /run/labboot/env ] && . /run/labboot/env
interval=${LABBOOT_AGENT_INTERVAL:-30}
board=${LABBOOT_BOARD:-unknown}
url=${LABBOOT_AGENT%/}
rest=${url#http://}
if [ -z "$LABBOOT_AGENT" ] || [ "$rest" = "$url" ]; then
	echo "labboot-agent: no http:// labboot.agent= on the kernel command line; not checking in"
	exec sleep 2147483647
fi
hostport=${rest%%/*}
prefix=${rest#"$hostport"}
host=${hostport%%:*}
port=${hostport##*:}
[ "$port" = "$hostport" ] && port=80
path="$prefix/api/v1/agent/checkin"
last=
while :; do
	uptime=$(cut -d' ' -f1 /proc/uptime)
	addr=$(ip -o -4 addr show dev "${LABBOOT_IFACE:-eth0}" 2>/dev/null | awk '{print $4; exit}')
	body=$(printf '{"board":"%s","root":"%s","address":"%s","uptime":"%s"}' \
		"$board" "${LABBOOT_ROOT:-}" "$addr" "$uptime")
	status=$(printf 'POST %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' \
		"$path" "$hostport" "${#body}" "$body" | nc -w 10 "$host" "$port" 2>/dev/null | head -n 1 | cut -d' ' -f2)
	case "$status" in
	2??) state="checked in to http://$hostport$path as $board" ;;
	"") state="no answer from http://$hostport$path (retrying every ${interval}s)" ;;
	*) state="http://$hostport$path answered $status (retrying every ${interval}s)" ;;
	esac
	if [ "$state" != "$last" ]; then
		echo "labboot-agent: $state"
		last=$state
	fi
	sleep "$interval"
done

#!/bin/sh
# labboot agent: the master's side of the agent protocol (appliance/API.md, "Agent"). Started by
# init (respawn), so it never exits: it logs state changes (one "labboot-agent:" line each) and
# retries. Settings come from $LABBOOT_ENV (default /run/labboot/env, written by the initrd from
# the kernel command line): LABBOOT_AGENT (labboot.agent=), LABBOOT_BOARD, LABBOOT_TOKEN,
# LABBOOT_AGENT_INTERVAL (seconds, default 30), LABBOOT_IFACE, LABBOOT_ROOT.
#
# Every request carries "Authorization: Bearer $LABBOOT_TOKEN" (the board token of the card).
#  1. POST /api/v1/agent/checkin, a JSON body: {"board", "mac", "macs", "addresses", "kernel",
#     "cpus", "memory_kb", "root", "uptime"}. 200 {"status": "ok"}: checked in. 200 with
#     "pending" (awaiting approval), 401, 409 (cloned card), no answer: sleep the interval, again.
#  2. GET /api/v1/agent/poll?board=ID&mac=MAC (no mac= and "mac": null above when the MAC is
#     unknown): the server holds it up to 30 s. 204: poll again. 200: lines work=N,
#     kind=run|fetch|reboot, command=, url=, path= (base64 values). Anything else: sleep the
#     interval and check in again. The agent also checks in again whenever its last check-in is
#     older than the interval (between polls and while work runs).
#  3. The work: run = sh -c COMMAND; fetch = GET URL (http://ADDRESS:PORT/…) into PATH, the size
#     in stdout; reboot = report first, then sync and reboot -f. The report:
#     POST /api/v1/agent/result?board=ID&work=N {"exit": N, "stdout": "B64", "stderr": "B64"},
#     each output cut at 1 MiB. Nothing from the server is evaluated but a run's command.
#
# HTTP/1.0 is written by hand and sent with busybox nc: Debian's busybox-static wget crashes
# (static glibc looking up services through NSS), nc with a numeric port does not. The agent URL
# must therefore be http://ADDRESS[:PORT][/PREFIX] with a numeric address. busybox nc's -w only
# bounds the connect, so busybox timeout bounds each exchange; and nc half-closes the connection
# at the end of its input, which a server may take for the client going away (hyper does while a
# long poll waits), so the request's input stays open until the answer has been read.
envfile=${LABBOOT_ENV:-/run/labboot/env}
[ -r "$envfile" ] && . "$envfile"
cd / || :
interval=${LABBOOT_AGENT_INTERVAL:-30}
case $interval in '' | *[!0-9]* | 0) interval=30 ;; esac
token=${LABBOOT_TOKEN:-}
iface=${LABBOOT_IFACE:-eth0}
cr=$(printf '\r')
cap=1048576 # bytes of stdout and of stderr a report carries
fetch_seconds=1800

# clean TEXT: TEXT without the characters a JSON string or a header could not carry as they are.
clean() {
	printf '%s' "$1" | tr -d '"\\\000-\037'
}

board=$(clean "${LABBOOT_BOARD:-unknown}")
root=$(clean "${LABBOOT_ROOT:-}")
token=$(clean "$token")
url=${LABBOOT_AGENT%/}
rest=${url#http://}
if [ -z "$LABBOOT_AGENT" ] || [ "$rest" = "$url" ]; then
	echo "labboot-agent: no http:// labboot.agent= on the kernel command line; not checking in"
	exec sleep 2147483647
fi
hostport=${rest%%/*}
prefix=${rest#"$hostport"}
[ -n "$token" ] ||
	echo "labboot-agent: no labboot.token= on the kernel command line; the appliance will refuse this board"

tmp=${TMPDIR:-/tmp}/labboot-agent.$$
rm -rf "$tmp"
mkdir -m 700 -p "$tmp" || echo "labboot-agent: cannot create $tmp"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

last=
# say STATE: logs STATE when it differs from the last one said.
say() {
	if [ "$*" != "$last" ]; then
		echo "labboot-agent: $*"
		last=$*
	fi
}

# now: sets $now to whole seconds since boot (a clock that does not jump).
now() {
	if read -r now _ 2>/dev/null </proc/uptime; then
		now=${now%%.*}
	else
		now=$(date +%s)
	fi
}

# response BODYFILE: reads an HTTP response on stdin, writes its body to BODYFILE (binary-safe:
# ash's read takes the header lines a byte at a time, cat the rest) and prints
# "STATUS CONTENT-LENGTH" (the length empty when the header is absent); nothing if no answer.
response() {
	IFS= read -r r_line || return 0
	r_status=${r_line#* }
	r_status=${r_status%% *}
	r_status=${r_status%"$cr"}
	case $r_status in [1-5][0-9][0-9]) ;; *) r_status=bad ;; esac
	r_length=
	while IFS= read -r r_line; do
		r_line=${r_line%"$cr"}
		[ -z "$r_line" ] && break
		case $r_line in
		[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]:*)
			r_length=${r_line#*:}
			r_length=${r_length#"${r_length%%[! ]*}"}
			case $r_length in *[!0-9]*) r_length= ;; esac
			;;
		esac
	done
	cat >"$1"
	echo "$r_status $r_length"
}

# http TAG METHOD HOST[:PORT] PATH BODYFILE OUTFILE SECONDS: one HTTP/1.0 exchange (BODYFILE
# empty: no body) of at most SECONDS. Writes the answer's body to OUTFILE; sets http_status
# (empty: no answer) and http_length (its Content-Length, empty if none). TAG names the marker
# that ends the request's input once the answer is read (one per concurrent exchange).
http() {
	h_host=${3%%:*}
	h_port=${3##*:}
	[ "$h_port" = "$3" ] && h_port=80
	h_done=$tmp/$1.done
	h_ticks=$(($7 * 10 + 50))
	rm -f "$h_done"
	: >"$6"
	h_res=$(
		exec 2>/dev/null # no "Terminated" when timeout ends nc
		{
			printf '%s %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\nUser-Agent: labboot-agent\r\n' \
				"$2" "$4" "$3" "$token"
			if [ -n "$5" ]; then
				printf 'Content-Type: application/json\r\nContent-Length: %s\r\n\r\n' $(($(wc -c <"$5")))
				cat "$5"
			else
				printf '\r\n'
			fi
			h_n=0 # input open until the answer is read: no half-close (see the top)
			while [ ! -e "$h_done" ] && [ "$h_n" -lt "$h_ticks" ]; do
				sleep 0.1
				h_n=$((h_n + 1))
			done
		} | timeout "$7" nc -w 10 "$h_host" "$h_port" | {
			response "$6"
			: >"$h_done"
		}
	)
	rm -f "$h_done"
	http_status=${h_res%% *}
	http_length=${h_res#* }
}

# error FILE: the "error" of a JSON answer, else its first line.
error() {
	e_text=$(sed -n 's/.*"error": *"\([^"]*\)".*/\1/p' "$1" 2>/dev/null | head -n 1)
	[ -n "$e_text" ] || e_text=$(head -n 1 "$1" 2>/dev/null | head -c 200)
	printf '%s' "$e_text" | tr -d '\000-\037'
}

# identity: sets $mac, the MAC of LABBOOT_IFACE (empty when unknown).
identity() {
	mac=
	read -r mac 2>/dev/null <"/sys/class/net/$iface/address"
	case $mac in *[!0-9a-fA-F:]*) mac= ;; esac
}

# checkin: one check-in. Sets checked_in (1 or 0) and last_checkin; says the state; 0 if ok.
checkin() {
	identity
	c_macs=
	for c_dir in /sys/class/net/*; do
		[ "${c_dir##*/}" = lo ] && continue
		c_mac=
		read -r c_mac 2>/dev/null <"$c_dir/address" || continue
		case $c_mac in '' | *[!0-9a-fA-F:]* | 00:00:00:00:00:00) continue ;; esac
		c_macs="$c_macs${c_macs:+, }\"$c_mac\""
	done
	c_addresses=$(ip -o -4 addr 2>/dev/null | awk '$2 != "lo" && $3 == "inet" {
		sub(/\/.*/, "", $4)
		if ($4 ~ /^[0-9.]+$/) printf "%s\"%s\"", (n++ ? ", " : ""), $4
	}')
	c_kernel=$(clean "$(uname -r 2>/dev/null)")
	c_cpus=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null)
	case $c_cpus in '' | *[!0-9]*) c_cpus=0 ;; esac
	c_memory=$(awk '$1 == "MemTotal:" { print $2; exit }' /proc/meminfo 2>/dev/null)
	case $c_memory in '' | *[!0-9]*) c_memory=0 ;; esac
	c_uptime=
	read -r c_uptime _ 2>/dev/null </proc/uptime
	case $c_uptime in '' | *[!0-9.]*) c_uptime=0 ;; esac
	c_mac=null # unknown, rather than a MAC the appliance would compare
	[ -n "$mac" ] && c_mac="\"$mac\""
	{
		printf '{"board": "%s", "mac": %s, "macs": [%s], "addresses": [%s], ' \
			"$board" "$c_mac" "$c_macs" "$c_addresses"
		printf '"kernel": "%s", "cpus": %s, "memory_kb": %s, "root": "%s", "uptime": "%s"}' \
			"$c_kernel" "$c_cpus" "$c_memory" "$root" "$c_uptime"
	} >"$tmp/checkin.json"
	c_path="$prefix/api/v1/agent/checkin"
	http checkin POST "$hostport" "$c_path" "$tmp/checkin.json" "$tmp/checkin.answer" 20
	checked_in=0
	case $http_status in
	200)
		if grep -q pending "$tmp/checkin.answer" 2>/dev/null; then
			say "checked in to http://$hostport$c_path as $board: pending approval (retrying every ${interval}s)"
		else
			checked_in=1
			now
			last_checkin=$now
			say "checked in to http://$hostport$c_path as $board${mac:+ ($mac)}"
			return 0
		fi
		;;
	"") say "no answer from http://$hostport$c_path (retrying every ${interval}s)" ;;
	*)
		say "http://$hostport$c_path answered $http_status: $(error "$tmp/checkin.answer")" \
			"(retrying every ${interval}s)"
		;;
	esac
	return 1
}

# due: true when the last check-in is older than the interval.
due() {
	now
	[ $((now - ${last_checkin:-0})) -ge "$interval" ]
}

# wait_work: waits for the work started in the background to write $tmp/rc, checking in when
# due meanwhile; sets rc.
wait_work() {
	w_n=0
	while [ ! -e "$tmp/rc" ]; do
		if [ "$w_n" -lt 20 ]; then sleep 0.05; else sleep 1; fi
		w_n=$((w_n + 1))
		if due; then checkin; fi
	done
	wait
	rc=$(cat "$tmp/rc")
	case $rc in '' | *[!0-9]*) rc=1 ;; esac
}

# fetch URL DEST: GET URL (http://ADDRESS[:PORT]/PATH) into DEST. Prints the size; errors go
# to stderr; 0 if done.
fetch() {
	f_url=$1
	f_dest=$2
	if [ -z "$f_dest" ]; then
		echo "fetch $f_url: no path to write it to" >&2
		return 2
	fi
	f_rest=${f_url#http://}
	if [ "$f_rest" = "$f_url" ] || [ -z "$f_rest" ]; then
		echo "fetch $f_url: not an http:// URL" >&2
		return 2
	fi
	f_hostport=${f_rest%%/*}
	f_path=/${f_rest#"$f_hostport"}
	f_path=/${f_path#//}
	case $f_dest in */*) mkdir -p "${f_dest%/*}" 2>/dev/null ;; esac
	f_part=$f_dest.labboot-part
	if ! : >"$f_part"; then
		echo "fetch $f_url: cannot write $f_dest" >&2
		return 1
	fi
	http fetch GET "$f_hostport" "$f_path" "" "$f_part" "$fetch_seconds"
	f_size=$(($(wc -c <"$f_part")))
	case $http_status in
	200)
		if [ -n "$http_length" ] && [ "$http_length" != "$f_size" ]; then
			echo "fetch $f_url: $f_size of $http_length bytes received" >&2
		elif mv -f "$f_part" "$f_dest"; then
			printf '%s' "$f_size"
			return 0
		else
			echo "fetch $f_url: cannot write $f_dest" >&2
		fi
		;;
	"") echo "fetch $f_url: no answer" >&2 ;;
	*) echo "fetch $f_url: HTTP $http_status: $(error "$f_part")" >&2 ;;
	esac
	rm -f "$f_part"
	return 1
}

# decode B64: the decoded text on stdout; false if it is not base64.
decode() {
	printf '%s' "$1" | base64 -d 2>/dev/null
}

# report WORK EXIT: POSTs the result of WORK ($tmp/out, $tmp/err) until it is taken, 5 tries.
report() {
	{
		printf '{"exit": %s, "stdout": "' "$2"
		head -c "$cap" "$tmp/out" 2>/dev/null | base64 | tr -d '\n'
		printf '", "stderr": "'
		head -c "$cap" "$tmp/err" 2>/dev/null | base64 | tr -d '\n'
		printf '"}'
	} >"$tmp/result.json"
	p_path="$prefix/api/v1/agent/result?board=$board&work=$1"
	p_try=1
	while :; do
		http result POST "$hostport" "$p_path" "$tmp/result.json" "$tmp/result.answer" 120
		case $http_status in
		200) return 0 ;;
		"" | 5??) p_why=${http_status:-no answer} ;;
		*)
			echo "labboot-agent: work $1: result refused: $http_status: $(error "$tmp/result.answer")"
			return 1
			;;
		esac
		if [ "$p_try" -ge 5 ]; then
			echo "labboot-agent: work $1: result not delivered ($p_why)"
			return 1
		fi
		p_try=$((p_try + 1))
		sleep 2
	done
}

# work: does the work described by the poll's answer ($tmp/poll) and reports it; false if the
# answer names no work.
work() {
	w_work=
	w_kind=
	w_command=
	w_url=
	w_path=
	while IFS= read -r w_line || [ -n "$w_line" ]; do
		w_line=${w_line%"$cr"}
		w_value=${w_line#*=}
		w_value=${w_value%%[	 ]*}
		case $w_line in
		work=*) w_work=$w_value ;;
		kind=*) w_kind=$w_value ;;
		command=*) w_command=$w_value ;;
		url=*) w_url=$w_value ;;
		path=*) w_path=$w_value ;;
		esac
	done <"$tmp/poll"
	case $w_work in
	'' | *[!0-9]*)
		echo "labboot-agent: work without a number ignored: $(head -c 200 "$tmp/poll" | tr -d '\000-\037')"
		return 1
		;;
	esac
	rm -f "$tmp/out" "$tmp/err" "$tmp/rc" "$tmp/rc.new"
	: >"$tmp/out"
	: >"$tmp/err"
	case $w_kind in
	run)
		if ! w_command=$(decode "$w_command"); then
			echo "command: not base64" >"$tmp/err"
			rc=2
		else
			{
				sh -c "$w_command" >"$tmp/out" 2>"$tmp/err" </dev/null
				echo $? >"$tmp/rc.new"
				mv -f "$tmp/rc.new" "$tmp/rc"
			} &
			wait_work
		fi
		echo "labboot-agent: work $w_work: run: exit $rc"
		report "$w_work" "$rc"
		;;
	fetch)
		if ! w_url=$(decode "$w_url") || ! w_path=$(decode "$w_path"); then
			echo "url, path: not base64" >"$tmp/err"
			rc=2
		else
			{
				fetch "$w_url" "$w_path" >"$tmp/out" 2>"$tmp/err" </dev/null
				echo $? >"$tmp/rc.new"
				mv -f "$tmp/rc.new" "$tmp/rc"
			} &
			wait_work
		fi
		echo "labboot-agent: work $w_work: fetch $w_url to $w_path: exit $rc"
		report "$w_work" "$rc"
		;;
	reboot)
		echo "labboot-agent: work $w_work: reboot"
		report "$w_work" 0
		sync
		reboot -f
		echo "labboot-agent: work $w_work: reboot -f failed"
		checked_in=0
		;;
	*)
		echo "unknown kind of work: $w_kind" >"$tmp/err"
		echo "labboot-agent: work $w_work: unknown kind $w_kind"
		report "$w_work" 2
		;;
	esac
	rm -f "$tmp/out" "$tmp/err"
}

checked_in=0
last_checkin=
while :; do
	if [ "$checked_in" != 1 ] || due; then
		if ! checkin; then
			sleep "$interval"
			continue
		fi
	fi
	identity
	q_path="$prefix/api/v1/agent/poll?board=$board${mac:+&mac=$mac}"
	http poll GET "$hostport" "$q_path" "" "$tmp/poll" 40
	case $http_status in
	204) ;;
	200) work || sleep "$interval" ;;
	"")
		say "no answer to a poll of http://$hostport$q_path (checking in again in ${interval}s)"
		checked_in=0
		sleep "$interval"
		;;
	*)
		say "http://$hostport$q_path answered $http_status: $(error "$tmp/poll")" \
			"(checking in again in ${interval}s)"
		checked_in=0
		sleep "$interval"
		;;
	esac
done

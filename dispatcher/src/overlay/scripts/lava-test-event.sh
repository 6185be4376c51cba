#!/bin/sh
# lava-test-event MESSAGE...
#
# Logs an event for the dispatcher: <LAVA_SIGNAL_TESTEVENT MESSAGE>.

LAVA_SCRIPT=lava-test-event
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
. "$LAVA_BIN/lava-common-functions"

if [ $# -eq 0 ]; then
    echo "usage: lava-test-event MESSAGE..." >&2
    exit 1
fi
lava_signal "<LAVA_SIGNAL_TESTEVENT $(lava_text "$@")>"
exit 0

#!/bin/sh
# lava-test-raise MESSAGE...
#
# Ends the test job's test action with a TestError: sends <LAVA_SIGNAL_TESTRAISE MESSAGE>,
# tells the runner to run nothing more, and exits 1, which stops run.sh (`set -e`).

LAVA_SCRIPT=lava-test-raise
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
. "$LAVA_BIN/lava-common-functions"

message=$(lava_text "$@")
if [ -z "$(printf '%s' "$message" | tr -d ' ')" ]; then
    echo "usage: lava-test-raise MESSAGE..." >&2
    exit 1
fi
lava_signal "<LAVA_SIGNAL_TESTRAISE $message>"
if [ -n "${LAVA_RAISE_FILE:-}" ]; then
    printf '%s\n' "$message" 2>/dev/null >"$LAVA_RAISE_FILE"
fi
exit 1

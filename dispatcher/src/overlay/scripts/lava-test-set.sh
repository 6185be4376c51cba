#!/bin/sh
# lava-test-set start NAME | lava-test-set stop [NAME]
#
# Groups the test cases that follow into the test set NAME (<LAVA_SIGNAL_TESTSET START NAME>)
# until the set is stopped (<LAVA_SIGNAL_TESTSET STOP>).

LAVA_SCRIPT=lava-test-set
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
. "$LAVA_BIN/lava-common-functions"

usage() {
    echo "usage: lava-test-set start NAME" >&2
    echo "       lava-test-set stop [NAME]" >&2
    exit 1
}

case ${1:-} in
    start)
        [ $# -eq 2 ] || usage
        lava_word "$2" "the test set name"
        lava_signal "<LAVA_SIGNAL_TESTSET START $2>"
        ;;
    stop)
        # Jobs written for LAVA often repeat the set's name here; it is ignored.
        [ $# -le 2 ] || usage
        lava_signal "<LAVA_SIGNAL_TESTSET STOP>"
        ;;
    *) usage ;;
esac
exit 0

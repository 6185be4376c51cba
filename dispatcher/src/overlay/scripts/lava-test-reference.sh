#!/bin/sh
# lava-test-reference NAME --result pass|fail|skip|unknown --reference URL
#
# Records test case NAME with a reference (a URL to more data):
# <LAVA_SIGNAL_TESTREFERENCE NAME RESULT URL>, LAVA's form of the signal.

LAVA_SCRIPT=lava-test-reference
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
. "$LAVA_BIN/lava-common-functions"

usage() {
    echo "usage: lava-test-reference NAME --result pass|fail|skip|unknown --reference URL" >&2
    exit 1
}

[ $# -ge 1 ] || usage
name=$1
shift
lava_word "$name" "the test case name"
result=
reference=
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case $1 in
        --result) result=$2 ;;
        --reference) reference=$2 ;;
        *) usage ;;
    esac
    shift 2
done
lava_word "$result" "the result"
lava_word "$reference" "the reference"
lava_signal "<LAVA_SIGNAL_TESTREFERENCE $name $result $reference>"
exit 0

#!/bin/sh
# lava-test-case NAME --result pass|fail|skip|unknown [--measurement VALUE] [--units UNITS] [--output FILE]
# lava-test-case NAME --shell COMMAND [ARG...]
#
# Sends <LAVA_SIGNAL_TESTCASE TEST_CASE_ID=NAME RESULT=R [MEASUREMENT=M] [UNITS=U]>.
# --shell runs COMMAND between <LAVA_SIGNAL_STARTTC NAME> and <LAVA_SIGNAL_ENDTC NAME> and the
# result is pass if it exits 0, fail otherwise; a single COMMAND word is evaluated by the shell
# (so 'a | b' is one command line), several words are run as they are; it runs in a subshell,
# so even an `exit` in it is a result. --output shows FILE between STARTTC and ENDTC.
# The script exits 0 once the result is sent, also for a failed command (a fail result is
# not a failed step); wrong usage exits 1.

LAVA_SCRIPT=lava-test-case
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
. "$LAVA_BIN/lava-common-functions"

usage() {
    echo "usage: lava-test-case NAME --result pass|fail|skip|unknown [--measurement VALUE] [--units UNITS] [--output FILE]" >&2
    echo "       lava-test-case NAME --shell COMMAND [ARG...]" >&2
    exit 1
}

[ $# -ge 2 ] || usage
TEST_CASE_ID=$1
shift
lava_word "$TEST_CASE_ID" "the test case name"
export TEST_CASE_ID

result=
measurement=
units=
output=
if [ "$1" = --shell ]; then
    shift
    [ $# -ge 1 ] || usage
    lava_signal "<LAVA_SIGNAL_STARTTC $TEST_CASE_ID>"
    if [ $# -eq 1 ]; then
        (eval "$1")
    else
        ("$@")
    fi
    rc=$?
    lava_signal "<LAVA_SIGNAL_ENDTC $TEST_CASE_ID>"
    if [ "$rc" -eq 0 ]; then
        result=pass
    else
        result=fail
    fi
else
    while [ $# -gt 0 ]; do
        [ $# -ge 2 ] || usage
        case $1 in
            --result) result=$2 ;;
            --measurement) measurement=$2 ;;
            --units) units=$2 ;;
            --output) output=$2 ;;
            *) usage ;;
        esac
        shift 2
    done
    [ -n "$result" ] || usage
    lava_word "$result" "the result"
    [ -z "$measurement" ] || lava_word "$measurement" "the measurement"
    [ -z "$units" ] || lava_word "$units" "the units"
    if [ -n "$output" ]; then
        lava_signal "<LAVA_SIGNAL_STARTTC $TEST_CASE_ID>"
        cat "$output"
        lava_signal "<LAVA_SIGNAL_ENDTC $TEST_CASE_ID>"
    fi
fi

# The result on the board too, where LAVA keeps it.
if [ -n "${LAVA_RESULT_DIR:-}" ]; then
    d=$LAVA_RESULT_DIR/results/$TEST_CASE_ID
    if mkdir -p "$d" 2>/dev/null; then
        echo "$result" >"$d/result"
        [ -z "$measurement" ] || echo "$measurement" >"$d/measurement"
        [ -z "$units" ] || echo "$units" >"$d/units"
    fi
fi

data="TEST_CASE_ID=$TEST_CASE_ID RESULT=$result"
[ -z "$measurement" ] || data="$data MEASUREMENT=$measurement"
[ -z "$units" ] || data="$data UNITS=$units"
lava_signal "<LAVA_SIGNAL_TESTCASE $data>"
exit 0

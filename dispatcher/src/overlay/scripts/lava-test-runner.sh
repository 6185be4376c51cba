#!/bin/sh
# lava-test-runner TESTS_DIR [STAGE]
#
# Runs one stage (one test block of the job) of the test definitions, in the order of
# TESTS_DIR/stage-STAGE.conf (a definition directory a line). For each definition: its
# install.sh if it has one (failing: <LAVA_TEST_RUNNER INSTALL_FAIL>, then the next one), then
# <LAVA_SIGNAL_STARTRUN suite uuid>, its run.sh, and <LAVA_SIGNAL_ENDRUN suite uuid> if run.sh
# exited 0. A run.sh that failed (its steps run under `set -e`) gets no ENDRUN, as in LAVA,
# where the dispatcher then records the run as failed. After lava-test-raise the runner runs
# nothing more. The last line is always <LAVA_TEST_RUNNER EXIT>; the exit status is 0 when
# every definition completed. Paths come from where the scripts are, so the overlay runs from
# any directory.

LAVA_SCRIPT=lava-test-runner
case $0 in */*) LAVA_BIN=${0%/*} ;; *) LAVA_BIN=. ;; esac
LAVA_BIN=$(cd "$LAVA_BIN" && pwd) || exit 2
. "$LAVA_BIN/lava-common-functions"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: lava-test-runner TESTS_DIR [STAGE]" >&2
    exit 2
fi
LAVA_TESTS_DIR=$(cd "$1" && pwd) || exit 2
stage=${2:-0}
conf=$LAVA_TESTS_DIR/stage-$stage.conf
if [ ! -r "$conf" ]; then
    echo "lava-test-runner: $LAVA_TESTS_DIR has no stage $stage" >&2
    exit 2
fi
LAVA_ROOT=${LAVA_TESTS_DIR%/*}
if [ -r "$LAVA_ROOT/environment" ]; then
    . "$LAVA_ROOT/environment"
fi
PATH=$LAVA_BIN:$PATH
export PATH LAVA_BIN LAVA_TESTS_DIR
set -f

results=$LAVA_ROOT/results
if ! mkdir -p "$results" 2>/dev/null; then
    results=${TMPDIR:-/tmp}/lava-results.$$
    mkdir -p "$results"
fi
LAVA_RAISE_FILE=$results/.raised-$stage
export LAVA_RAISE_FILE
rm -f "$LAVA_RAISE_FILE"

trap 'lava_signal "<LAVA_TEST_RUNNER EXIT>"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0
for suite in $(cat "$conf"); do
    dir=$LAVA_TESTS_DIR/$suite
    uuid=$(cat "$dir/uuid" 2>/dev/null)
    LAVA_RESULT_DIR=$results/$suite
    mkdir -p "$LAVA_RESULT_DIR" 2>/dev/null
    export LAVA_RESULT_DIR
    if [ "$(cat "$dir/lava-signal" 2>/dev/null)" = kmsg ]; then
        LAVA_SIGNAL_KMSG=1
        export LAVA_SIGNAL_KMSG
    else
        unset LAVA_SIGNAL_KMSG
    fi
    if [ -f "$dir/install.sh" ]; then
        ${LAVA_SHELL:-/bin/sh} "$dir/install.sh"
        rc=$?
        echo "$rc" 2>/dev/null >"$LAVA_RESULT_DIR/install_return_code"
        if [ "$rc" -ne 0 ]; then
            echo "lava-test-runner: $suite: install.sh exited with $rc: not running it"
            lava_signal "<LAVA_TEST_RUNNER INSTALL_FAIL>"
            status=1
            continue
        fi
    fi
    lava_signal "<LAVA_SIGNAL_STARTRUN $suite $uuid>"
    ${LAVA_SHELL:-/bin/sh} "$dir/run.sh"
    rc=$?
    echo "$rc" 2>/dev/null >"$LAVA_RESULT_DIR/return_code"
    if [ -e "$LAVA_RAISE_FILE" ]; then
        echo "lava-test-runner: $suite raised a TestError: running nothing more"
        status=1
        break
    fi
    if [ "$rc" -eq 0 ]; then
        lava_signal "<LAVA_SIGNAL_ENDRUN $suite $uuid>"
    else
        echo "lava-test-runner: $suite: run.sh exited with $rc: its run is incomplete"
        status=1
    fi
done
exit $status

#!/bin/sh
# lava-common-functions: sourced by the other lava-* scripts, not run on its own.
#
# How a signal reaches the dispatcher. A signal is one line, written by one printf (one
# write(2), so no other process's output can land inside it). It goes to stdout, which the
# runner shares with the console: signals stay in order with the test's own output, need no
# privilege and are never rate-limited. On a console the kernel also writes to, a kernel
# message can still cut the line in two; the dispatcher puts such a signal back together.
# A definition with `lava-signal: kmsg` (LAVA_SIGNAL_KMSG set) writes to /dev/kmsg instead, at
# KERN_EMERG so that any console log level shows it: the kernel then prints each signal whole,
# but it rate-limits /dev/kmsg writers (printk.devkmsg) and its messages may overtake the
# test's own output. Without a writable /dev/kmsg the signal goes to stdout.
# (LAVA_KMSG_DEVICE replaces /dev/kmsg, for testing the scripts on a host.)

lava_signal() {
    if [ -n "${CHARACTER_DELAY:-}" ]; then
        sleep "$CHARACTER_DELAY"
    fi
    if [ -n "${LAVA_SIGNAL_KMSG:-}" ] && [ -w "${LAVA_KMSG_DEVICE:-/dev/kmsg}" ] &&
        printf '<0>%s\n' "$1" 2>/dev/null >>"${LAVA_KMSG_DEVICE:-/dev/kmsg}"; then
        return 0
    fi
    printf '%s\n' "$1"
}

# lava_word VALUE WHAT: a usage error (exit 1) unless VALUE is one word without '<' or '>':
# it goes into a signal, whose parameters are separated by blanks and which ends at '>'.
lava_word() {
    case $1 in
        '' | *[[:space:]]* | *'<'* | *'>'*)
            echo "${LAVA_SCRIPT:-lava}: $2 must be one word without '<' or '>', not '$1'" >&2
            exit 1
            ;;
    esac
}

# lava_text TEXT...: the text on one line, '<' and '>' made '(' and ')', for a signal message.
lava_text() {
    printf '%s' "$*" | tr '<>\r\n\t' '()   '
}

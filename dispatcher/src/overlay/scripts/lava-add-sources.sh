#!/bin/sh
# lava-add-sources SOURCE...
#
# Adds package sources (install.sources) on Debian and Ubuntu; elsewhere it says it cannot
# and succeeds, as LAVA does.

case ${LAVA_OS:-} in
    debian | ubuntu)
        for source in "$@"; do
            if command -v add-apt-repository >/dev/null 2>&1; then
                DEBIAN_FRONTEND=noninteractive add-apt-repository -y "$source" || exit 1
            else
                printf '%s\n' "$source" >>/etc/apt/sources.list.d/lava-test.list || exit 1
            fi
        done
        ;;
    *) echo "lava-add-sources: cannot add package sources on os '${LAVA_OS:-}': $*" ;;
esac
exit 0

#!/bin/sh
# lava-install-packages PACKAGE...
#
# Installs a definition's install.deps with the package manager of LAVA_OS (the deploy's
# `os`). For an os it has no package manager for, it lists the packages the image must carry
# and succeeds, as LAVA does for distributions it does not know.

[ $# -gt 0 ] || exit 0
case ${LAVA_OS:-} in
    debian | ubuntu)
        DEBIAN_FRONTEND=noninteractive
        export DEBIAN_FRONTEND
        apt-get update -q && apt-get install -y -q "$@"
        ;;
    fedora | centos)
        if command -v dnf >/dev/null 2>&1; then
            dnf -y install "$@"
        else
            yum -y install "$@"
        fi
        ;;
    oe) opkg update && opkg install "$@" ;;
    archlinux) pacman -Sy --noconfirm "$@" ;;
    alpine) apk add "$@" ;;
    *)
        echo "lava-install-packages: cannot install packages on os '${LAVA_OS:-}': the image needs: $*"
        exit 0
        ;;
esac

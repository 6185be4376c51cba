#!/bin/sh
# lava-add-keys KEY...
#
# install.keys: fetching signing keys needs a key server the lab cannot reach, so, as LAVA
# does for most distributions, this says so and succeeds: the image must trust the sources.

echo "lava-add-keys: not adding keys $*: the image must already trust its package sources"
exit 0

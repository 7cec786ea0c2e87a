#!/usr/bin/env bash
# `scripts/install-packages.sh PKG…`: installs the named Debian packages (the make targets pass the
# ones they found missing). As root with apt-get, installs them (updating the package lists once if
# the first try fails); otherwise prints the command to run and fails. No package: nothing to do.
set -euo pipefail
[ "$#" -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "$@" ||
        { apt-get update && apt-get install -y --no-install-recommends "$@"; }
else
    echo "missing system packages: $*"
    echo "install them with: sudo apt-get install -y $*"
    exit 1
fi

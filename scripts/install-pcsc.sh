#!/bin/sh
# Install the PC/SC test stack (toolchain.md §1): pcscd, the vsmartcard vpcd driver and the
# PC/SC headers pyscard builds against, then pyscard into the given virtualenv.
# Idempotent: apt runs only when a package is missing; pip skips an installed pyscard.
# Usage: scripts/install-pcsc.sh [VENV]   (default: .venv)
set -eu

VENV="${1:-.venv}"
PACKAGES="pcscd vsmartcard-vpcd libpcsclite-dev"

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done

if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "install-pcsc: installing$missing"
    $SUDO apt-get update
    # shellcheck disable=SC2086  # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $missing
else
    echo "install-pcsc: system packages already present"
fi

if "$VENV/bin/python" -c "import smartcard" 2>/dev/null; then
    echo "install-pcsc: pyscard already in $VENV"
else
    # pyscard has no Linux wheel: pip builds the sdist (needs gcc, Python headers, winscard.h).
    "$VENV/bin/pip" install pyscard
fi

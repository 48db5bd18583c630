#!/usr/bin/env bash
# Install the system packages OneCard's tests and `make run` need, then pyscard into the venv.
#
#   pcscd vsmartcard-vpcd libpcsclite-dev   PC/SC daemon, virtual reader driver, headers for pyscard
#   mosquitto mosquitto-clients             the MQTT broker the platform and the tests start
#   chromium                                headless browser for the console tests (Playwright)
#   fonts-noto-cjk                          Chinese glyphs for the console's screenshots
#   nodejs (+ npm where node comes without it)  `npm ci` of the console's front-end libraries
#   gcc libssl-dev                          build onecard.keys._tacbatch (C, OpenSSL 3 libcrypto)
#
# Idempotent and quiet when nothing is missing: each package is checked with `dpkg -s` first,
# `apt-get update` runs only when something must be installed. Services are never started here
# (test fixtures and `onecard run` start what they need). Without root (and without password-less
# sudo) it prints a warning and carries on.
#
# Usage: scripts/install-system.sh [--packages-only] [VENV]        (default: .venv)
set -euo pipefail

PACKAGES_ONLY=0
if [[ "${1:-}" == "--packages-only" ]]; then
    PACKAGES_ONLY=1
    shift
fi
VENV="${1:-.venv}"
PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev mosquitto mosquitto-clients chromium gcc libssl-dev
    fonts-noto-cjk nodejs)
# Debian's nodejs comes without npm; NodeSource's (and others') bundle it and clash with Debian's.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)

log() { printf 'install-system: %s\n' "$*"; }
warn() { printf 'install-system: WARNING: %s\n' "$*" >&2; }

missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
            missing+=("$pkg")
        fi
    done
else
    warn "dpkg not found: not a Debian-like system; install these yourself: ${PACKAGES[*]}"
fi

if ((${#missing[@]})); then
    SUDO=()
    can_apt=1
    if [[ "$(id -u)" -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=(sudo -n)
        else
            can_apt=0
        fi
    fi
    if ((can_apt)) && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]}"
        started=$SECONDS
        apt_log="$(mktemp "${TMPDIR:-/tmp}/onecard-apt.XXXXXX.log")"
        # apt's progress output is long; keep it in a file and show its tail only on failure.
        if ! { "${SUDO[@]}" apt-get update -q &&
            "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
            tail -n 40 "$apt_log" >&2
            warn "apt-get failed (full log: $apt_log)"
            exit 1
        fi
        rm -f "$apt_log"
        log "apt done in $((SECONDS - started)) s"
    else
        warn "cannot use apt here (not root, no password-less sudo): missing ${missing[*]}"
        warn "install them by hand: apt-get install --no-install-recommends ${missing[*]}"
        warn "continuing; tests that need them will fail or skip"
    fi
fi

# pyscard has no Linux wheel: pip builds the sdist, which needs gcc, the Python headers and
# winscard.h from libpcsclite-dev (toolchain.md §1). It is not a dependency in pyproject.toml
# because a plain `pip install onecard` must not need a C toolchain.
if ((PACKAGES_ONLY)); then
    :
elif [[ ! -x "$VENV/bin/python" ]]; then
    warn "no virtualenv at $VENV: skipping pyscard"
elif ! "$VENV/bin/python" -c 'import smartcard' 2>/dev/null; then
    if [[ -e /usr/include/PCSC/winscard.h ]]; then
        log "building pyscard into $VENV"
        # (the filter drops pip's per-package warnings about this machine's empty local indexes)
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q pyscard 2>&1 |
            { grep -v 'is ignored: it is neither a file nor a directory' || true; }
    else
        warn "libpcsclite-dev missing (no /usr/include/PCSC/winscard.h): pyscard not installed"
    fi
fi

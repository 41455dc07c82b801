#!/bin/sh
# Headless Chromium for tests/test_browser.py, from Debian's packages (chromium, chromium-driver),
# installed when absent: as root, or through sudo when it asks no password. `make test` runs this
# before pytest. It never fails the build itself: when Chromium cannot be installed, the browser
# tests skip (fail in CI, where RIPOSTE_REQUIRE_BROWSER=1) and their message gives the reason
# written here to .riposte/chromium-install.log. The apt work takes at most
# RIPOSTE_CHROMIUM_INSTALL_SECONDS (900) in all.
set -u
cd "$(dirname "$0")/.." || exit 0

CHROMIUM=/usr/bin/chromium
DRIVER=/usr/bin/chromedriver
PACKAGES="chromium chromium-driver"
LOG=.riposte/chromium-install.log
BUDGET=${RIPOSTE_CHROMIUM_INSTALL_SECONDS:-900}

mkdir -p .riposte
if [ -x "$CHROMIUM" ] && [ -x "$DRIVER" ]; then
    rm -f "$LOG"
    exit 0
fi
: >"$LOG"

# The last line of the log is the reason the browser tests give when they skip (or fail).
give_up() {
    echo "$*" >>"$LOG"
    echo "tests/install-chromium.sh: $* (the browser tests will skip; with" \
        "RIPOSTE_REQUIRE_BROWSER=1, as in CI, they fail)" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 ||
    give_up "no apt-get: not a Debian system, install Chromium at $CHROMIUM by hand"
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    as_root="sudo -n"
else
    give_up "not root and no password-less sudo:" \
        "run 'sudo apt-get install --no-install-recommends $PACKAGES'"
fi

command -v timeout >/dev/null 2>&1 || give_up "no timeout command (coreutils) to bound apt-get"
started=$(date +%s)

# apt-get under what is left of the budget: a stalled mirror or lock never hangs the tests.
# Exit status 124: the budget ran out.
apt_get() {
    left=$((BUDGET - ($(date +%s) - started)))
    if [ "$left" -le 0 ]; then
        echo "E: no time left of the ${BUDGET} s budget" >>"$LOG"
        return 124
    fi
    # shellcheck disable=SC2086 # as_root is empty or "sudo -n"
    $as_root timeout -k 30 "$left" env DEBIAN_FRONTEND=noninteractive \
        apt-get -q -o DPkg::Lock::Timeout=120 "$@" >>"$LOG" 2>&1
}

# apt-get's last error, for the reason: the whole output stays in the log.
failed() {
    status=$2
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        give_up "$1 timed out: the apt work took over ${BUDGET} s in all (output in $LOG)"
    fi
    give_up "$1 failed: $(grep -E '^(E|W): ' "$LOG" | tail -n 1) (all of it in $LOG)"
}

echo "tests/install-chromium.sh: installing $PACKAGES (Debian packages) for the browser tests" >&2
# shellcheck disable=SC2086 # one word per package
apt_get install -y --no-install-recommends $PACKAGES
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    failed "apt-get install $PACKAGES" "$status"
elif [ "$status" -ne 0 ]; then
    # A fresh machine has no package lists yet (or stale ones): read them, then try again. A
    # mirror that fails once (a sync in progress, a dropped connection) gets a second chance.
    apt_get update
    status=$?
    if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$status" -ne 137 ]; then
        echo "apt-get update failed (exit $status): once more in 10 s" >>"$LOG"
        sleep 10
        apt_get update
        status=$?
    fi
    [ "$status" -eq 0 ] || failed "apt-get update" "$status"
    # shellcheck disable=SC2086
    apt_get install -y --no-install-recommends $PACKAGES ||
        failed "apt-get install $PACKAGES" $?
fi
[ -x "$CHROMIUM" ] || give_up "apt-get installed $PACKAGES but there is no $CHROMIUM"
echo "installed: $("$CHROMIUM" --version 2>/dev/null)" >>"$LOG"
exit 0

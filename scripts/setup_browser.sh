#!/bin/sh
# Chromium and its driver for tests/test_browser.py (the mask explorer in JupyterLab), from the
# Debian packages chromium and chromium-driver: installed when missing and when this machine allows
# it (apt-get, and root or passwordless sudo). Otherwise one line says why and the test skips.
# Never fails the set-up: nothing else needs a browser.
CHROMIUM=${CAGNET_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CAGNET_CHROMEDRIVER:-/usr/bin/chromedriver}
PACKAGES="chromium chromium-driver"

if [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser test: $CHROMIUM or $CHROMEDRIVER missing and no apt-get to install $PACKAGES; tests/test_browser.py will skip"
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    AS_ROOT=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    AS_ROOT="sudo -n"
else
    echo "browser test: installing $PACKAGES needs root or passwordless sudo; tests/test_browser.py will skip"
    exit 0
fi
echo "browser test: installing $PACKAGES (apt-get)"
if ! { $AS_ROOT apt-get update -qq >/dev/null &&
       $AS_ROOT env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null; }; then
    echo "browser test: apt-get could not install $PACKAGES; tests/test_browser.py will skip"
fi
exit 0

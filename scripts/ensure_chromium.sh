#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing (needs root and apt).
# Where it cannot, the browser tests skip themselves with a message saying how to enable them.
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium missing and cannot install it (need root + apt): browser tests will be skipped." >&2; exit 0
fi
echo "installing chromium for the browser tests (apt)..." >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
  || echo "chromium install failed: browser tests will be skipped." >&2

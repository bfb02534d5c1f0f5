#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries for the store's PostgreSQL tests when they are missing
# (needs root and apt). The tests start their own throw-away cluster from them (tests/conftest.py:
# initdb in a temporary folder, run as the `postgres` user, a loopback port); nothing is started
# here and the system's own cluster is not used. Where this cannot install, the PostgreSQL half of
# the store tests skips with a message (set CAI_TEST_DATABASE_URL to use a server of your own).
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "PostgreSQL missing and cannot install it (need root + apt): the PostgreSQL store tests will be skipped." >&2; exit 0
fi
echo "installing PostgreSQL for the store tests (apt)..." >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null) \
  || echo "PostgreSQL install failed: the PostgreSQL store tests will be skipped." >&2
# Debian's package starts (and enables) the system cluster; the tests do not need it.
if command -v pg_ctlcluster >/dev/null 2>&1; then
  for c in $(pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}'); do pg_ctlcluster ${c%/*} ${c#*/} stop 2>/dev/null || true; done
fi
exit 0

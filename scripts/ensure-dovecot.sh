#!/usr/bin/env bash
# Make sure Debian's Dovecot IMAP server is installed for the IMAP tests. It is
# only installed, never started or enabled here: each test starts its own with
# its own config, port, user and Maildir (tests/dovecot.py).
set -euo pipefail

if [ -x /usr/sbin/dovecot ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-dovecot: /usr/sbin/dovecot is missing; install dovecot-imapd (needs root)" >&2
  exit 1
fi
echo "ensure-dovecot: installing dovecot-imapd and dovecot-lmtpd from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
# Another install may hold the dpkg lock for a while: wait instead of failing.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
  dovecot-imapd dovecot-lmtpd >/dev/null
# The package would start a system-wide server on a real machine; the tests need none.
if command -v service >/dev/null 2>&1; then
  service dovecot stop >/dev/null 2>&1 || true
fi
test -x /usr/sbin/dovecot

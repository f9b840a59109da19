#!/usr/bin/env bash
# Make sure a PostgreSQL server answers for the tests; start or install one if not.
set -euo pipefail
host=127.0.0.1 port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "ensure-postgres: installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  fi
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "ensure-postgres: starting cluster $version/main" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 50); do ready && break; sleep 0.2; done
fi

if ! ready; then
  echo "ensure-postgres: PostgreSQL is not answering on $host:$port" >&2
  exit 1
fi
# The tests connect as the postgres role without a password (trust on loopback).
if ! psql -h "$host" -p "$port" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1; then
  echo "ensure-postgres: cannot connect as postgres on $host:$port; set INGESTD_TEST_POSTGRES_URL" >&2
  exit 1
fi

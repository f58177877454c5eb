#!/usr/bin/env bash
# What `make test` needs besides the virtualenv: PostgreSQL on 127.0.0.1:5432 (user postgres,
# trust auth over TCP), Debian's Chromium for the dashboard's browser test, Debian's
# Prometheus and Alertmanager for the signal sources' tests and promtool for the operations tests (only their binaries: the tests
# start their own, on free ports; the packages' own services are not needed), and Debian's
# docker-compose (tests/test_compose.py runs `docker-compose config`; no engine needed).
# As root on a Debian-like machine it installs and starts what is missing; otherwise it says in
# one line what to install and exits 1. ACCORD_TEST_DEPS=skip leaves the machine as it is.
set -euo pipefail

say() { echo "test-deps: $*"; }
[ "${ACCORD_TEST_DEPS:-}" = "skip" ] && exit 0

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_updated=""
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then apt-get update -q >/dev/null; apt_updated=1; fi
  apt-get install -y -q "$@" >/dev/null
}

pg_ready() { command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q; }

if ! pg_ready; then
  if ! can_install; then
    say "PostgreSQL is not answering on 127.0.0.1:5432: install and start it (Debian: apt-get install postgresql), trust auth for user postgres over TCP"
    exit 1
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    say "installing PostgreSQL"
    apt_install postgresql
  fi
  for conf in /etc/postgresql/*/main/pg_hba.conf; do
    # The tests connect as postgres over TCP without a password, as on the development machines.
    if ! grep -q "accord-test" "$conf"; then
      sed -i '1i host all all 127.0.0.1/32 trust # accord-test' "$conf"
    fi
  done
  for v in $(ls /etc/postgresql); do
    say "starting PostgreSQL $v"
    pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null \
      || pg_ctlcluster --skip-systemctl-redirect "$v" main reload || true
  done
  for _ in $(seq 1 60); do pg_ready && break; sleep 1; done
  pg_ready || { say "PostgreSQL did not come up on 127.0.0.1:5432"; exit 1; }
fi

if ! command -v chromium >/dev/null; then
  if ! can_install; then
    say "Chromium is missing for the dashboard's browser test: install Debian's chromium package"
    exit 1
  fi
  say "installing Chromium"
  apt_install chromium
fi
# Debian's packages start their daemons where an init system runs (ports 9090, 9093): the tests
# never use those, they start their own servers.
for pair in "prometheus:/usr/bin/prometheus" "prometheus-alertmanager:/usr/bin/prometheus-alertmanager"; do
  pkg="${pair%%:*}"; bin="${pair#*:}"
  if [ ! -x "$bin" ]; then
    if ! can_install; then
      say "$bin is missing for the signal sources' tests: install Debian's $pkg package"
      exit 1
    fi
    say "installing $pkg"
    apt_install --no-install-recommends "$pkg"
  fi
done
if ! command -v docker-compose >/dev/null; then
  if ! can_install; then
    say "docker-compose is missing for the compose file's check: install Debian's docker-compose package"
    exit 1
  fi
  say "installing docker-compose"
  apt_install docker-compose
fi
say "PostgreSQL, Chromium, Prometheus, Alertmanager and docker-compose ready"

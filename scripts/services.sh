#!/usr/bin/env bash
# Make sure what the tests talk to is installed and running: PostgreSQL and Redis on
# 127.0.0.1 (the machine usually starts them; we start them when they are down), plus the
# Debian tools the tests use (promtool and prometheus for dashboards/, chromium for the HTML
# report). The DynamoDB endpoint (moto server) is started by the tests themselves on a free
# loopback port.
set -euo pipefail

need_apt=()
command -v pg_ctlcluster >/dev/null || need_apt+=(postgresql)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pg_isready >/dev/null || need_apt+=(postgresql-client)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
{ command -v promtool && command -v prometheus; } >/dev/null || need_apt+=(prometheus)  # dashboards/
command -v chromium >/dev/null || need_apt+=(chromium)  # headless: loads the HTML report
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q
  # Install, never start: a packaged Prometheus must not take ports the tests use.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 1 50); do
  pg_isready -h 127.0.0.1 -p 5432 -q && (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break
  sleep 0.2
done
pg_isready -h 127.0.0.1 -p 5432
redis-cli -h 127.0.0.1 -p 6379 ping

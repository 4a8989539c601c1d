#!/usr/bin/env bash
# Makes sure the servers the tests use are up: Redis on 127.0.0.1:6379 and
# NATS with JetStream on 127.0.0.1:4222. Starts whichever is down (needs the
# Debian packages redis-server and nats-server, installed if missing).
set -euo pipefail

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 50); do port_open "$1" && return 0; sleep 0.2; done
  echo "services: $2 did not come up on 127.0.0.1:$1" >&2
  return 1
}

apt_install() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "services: installing $2" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null
  fi
}

if ! port_open 6379; then
  apt_install redis-server redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
fi

if ! port_open 4222; then
  apt_install nats-server nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 NATS
fi
echo "services: Redis 127.0.0.1:6379 and NATS 127.0.0.1:4222 are up"

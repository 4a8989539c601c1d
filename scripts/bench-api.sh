#!/usr/bin/env bash
# API benchmark: `POST /warm/key` under wrk on loopback; reports requests/s and p99.
#
# Starts the release build with the built-in demo origin (no WARMING_ORIGIN_URL)
# and the embedded memory cache, then runs
#   wrk -t2 -c32 -d15s --latency -s scripts/bench/api-warm-key.lua
# where each request is {"keys": ["bench:<random 1..1000>"]} (application/json).
#
#   scripts/bench-api.sh                   # from the repo root
#   BENCH_API_CONNS=64 BENCH_API_DURATION=30s scripts/bench-api.sh
#
# Settings (environment, defaults in brackets): BENCH_API_PORT [18090],
# BENCH_API_THREADS [2], BENCH_API_CONNS [32], BENCH_API_DURATION [15s],
# BENCH_SKIP_BUILD [0], BENCH_QUIET_WAIT [0] seconds to wait for 1-min load <=
# BENCH_QUIET_LOAD [1.0] before starting.
# Only 127.0.0.1 is used. The service is stopped on exit. Exit status 0 when
# wrk ran and saw no errors or non-2xx answers, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${BENCH_API_PORT:-18090}
THREADS=${BENCH_API_THREADS:-2}
CONNS=${BENCH_API_CONNS:-32}
DURATION=${BENCH_API_DURATION:-15s}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BIN=target/release/warming

while read -r v; do unset "$v"; done < <(compgen -e | grep '^WARMING_' || true)

log() { printf '[bench-api %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# Optionally wait (bounded) for a quiet machine: other builds skew the figures.
wait_quiet() {
  local max=${BENCH_QUIET_WAIT:-0} want=${BENCH_QUIET_LOAD:-1.0} end
  ((max > 0)) || return 0
  end=$((SECONDS + max))
  while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v w="$want" 'BEGIN {exit !(l > w)}'; do
    if ((SECONDS >= end)); then log "load still $(loadavg) after ${max}s; going on"; return 0; fi
    sleep 5
  done
  log "load $(loadavg) <= $want; starting"
}

WORK="" SVC_PID="" WRK_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # a failing step must not cut the cleanup short
  [[ -n $WRK_PID ]] && kill -TERM "$WRK_PID" 2>/dev/null && wait "$WRK_PID" 2>/dev/null
  if [[ -n $SVC_PID ]] && kill -0 "$SVC_PID" 2>/dev/null; then
    kill -TERM "$SVC_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SVC_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SVC_PID" 2>/dev/null || true
    wait "$SVC_PID" 2>/dev/null || true
  fi
  [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

APT_UPDATED=0
need() { # command package
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] && return 0
  log "installing $2"
  if ((!APT_UPDATED)); then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] || die "could not install $2"
}
need wrk wrk
need curl curl
need python3 python3

port_open "$PORT" && die "port 127.0.0.1:$PORT is in use; set BENCH_API_PORT"
if [[ $SKIP_BUILD != 1 ]]; then
  log "cargo build --release"
  cargo build --release --quiet
fi
[[ -x $BIN ]] || die "$BIN not found"

WORK=$(mktemp -d /tmp/warming-bench-api.XXXXXX)
wait_quiet
LOAD_START=$(loadavg)
log "load average at start: $LOAD_START (cores: $(nproc))"

# Demo origin (synthetic values), memory cache, no schedules; rate limit and
# worker count left at their defaults: this measures the HTTP intake path.
env WARMING_LISTEN="127.0.0.1:$PORT" \
    WARMING_CACHE_URL="memory://" \
    WARMING_BUILTIN_SCHEDULES=false \
    WARMING_STATE_DIR="$WORK/state" \
    WARMING_LOG=warn \
    "$BIN" serve >"$WORK/service.log" 2>&1 &
SVC_PID=$!
end=$((SECONDS + 30))
until curl -fsS --max-time 2 "http://127.0.0.1:$PORT/warm/status" >/dev/null 2>&1; do
  if ! kill -0 "$SVC_PID" 2>/dev/null || ((SECONDS >= end)); then
    tail -20 "$WORK/service.log" >&2
    die "service did not come up on 127.0.0.1:$PORT"
  fi
  sleep 0.1
done
# One request by hand, so a broken endpoint fails loudly instead of as a fast 4xx.
code=$(curl -sS --max-time 5 -o "$WORK/first.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"keys":["bench:1"]}' "http://127.0.0.1:$PORT/warm/key")
[[ $code == 200 ]] || die "POST /warm/key answered $code: $(head -c 300 "$WORK/first.json")"

log "wrk -t$THREADS -c$CONNS -d$DURATION --latency -s scripts/bench/api-warm-key.lua http://127.0.0.1:$PORT"
# CPU accounting: the service's own ticks and the whole machine's, around wrk.
svc_ticks() { awk '{print $14+$15}' "/proc/$SVC_PID/stat"; }
sys_ticks() { awk 'NR == 1 {b = 0; for (i = 2; i <= NF; i++) if (i != 5 && i != 6) b += $i; print b}' /proc/stat; }
s0=$(svc_ticks); m0=$(sys_ticks); t0=$(date +%s.%N)
# In the background + wait, so that a signal runs the cleanup at once.
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s scripts/bench/api-warm-key.lua \
    "http://127.0.0.1:$PORT" >"$WORK/wrk.txt" &
WRK_PID=$!
wait "$WRK_PID" || die "wrk failed"
WRK_PID=""
cat "$WORK/wrk.txt" >&2
s1=$(svc_ticks); m1=$(sys_ticks); t1=$(date +%s.%N)
CPU=$(awk -v s=$((s1 - s0)) -v m=$((m1 - m0)) -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" \
  'BEGIN {d = b - a; printf "service %.2f cores, whole machine %.2f cores busy", s / hz / d, m / hz / d}')
LOAD_END=$(loadavg)

RPS=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.txt")
P50=$(awk '$1 == "50%" {print $2}' "$WORK/wrk.txt")
P99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
[[ -n $RPS && -n $P99 ]] || die "could not read Requests/sec and p99 from wrk"
STATUS=$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/warm/status" |
  python3 -c 'import json, sys
s = json.load(sys.stdin); m = s["metrics"]
print("queued_tasks %s, keys warmed %s, deduplicated_total %s"
      % (s["queued_tasks"], m["jobs_total"], m.get("deduplicated_total")))' 2>/dev/null || echo "n/a")

echo
echo "== POST /warm/key under wrk -t$THREADS -c$CONNS -d$DURATION, loopback, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "requests/s: $RPS"
echo "latency p50: $P50   p99: $P99"
echo "CPU during wrk: $CPU (the rest is wrk itself and anything else running)"
echo "service after the run: $STATUS"
echo "load average: start $LOAD_START, end $LOAD_END"

if grep -Eq 'Non-2xx|Socket errors' "$WORK/wrk.txt"; then
  die "wrk saw errors or non-2xx answers (see above)"
fi

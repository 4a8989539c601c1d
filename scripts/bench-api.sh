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
LOG_TAG=bench-api
source scripts/bench/lib.sh

PORT=${BENCH_API_PORT:-18090}
THREADS=${BENCH_API_THREADS:-2}
CONNS=${BENCH_API_CONNS:-32}
DURATION=${BENCH_API_DURATION:-15s}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}

clear_warming_env

SVC_PID=""
stop_processes() { # the cleanup trap's hook
  stop_pid "$CHILD" TERM 5
  stop_pid "$SVC_PID" TERM 10
}
install_cleanup

need wrk wrk
need curl curl
need python3 python3

require_free_port "$PORT" BENCH_API_PORT
build_release

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
wait_service "http://127.0.0.1:$PORT" "$SVC_PID" "$WORK/service.log" service "127.0.0.1:$PORT"
# One request by hand, so a broken endpoint fails loudly instead of as a fast 4xx.
code=$(curl -sS --max-time 5 -o "$WORK/first.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"keys":["bench:1"]}' "http://127.0.0.1:$PORT/warm/key")
[[ $code == 200 ]] || die "POST /warm/key answered $code: $(head -c 300 "$WORK/first.json")"

log "wrk -t$THREADS -c$CONNS -d$DURATION --latency -s scripts/bench/api-warm-key.lua http://127.0.0.1:$PORT"
# CPU accounting: the service's own ticks and the whole machine's, around wrk.
svc_ticks() { awk '{print $14+$15}' "/proc/$SVC_PID/stat"; }
sys_ticks() { awk 'NR == 1 {b = 0; for (i = 2; i <= NF; i++) if (i != 5 && i != 6) b += $i; print b}' /proc/stat; }
s0=$(svc_ticks); m0=$(sys_ticks); t0=$(date +%s.%N)
run_bg wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s scripts/bench/api-warm-key.lua \
    "http://127.0.0.1:$PORT" >"$WORK/wrk.txt" || die "wrk failed"
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

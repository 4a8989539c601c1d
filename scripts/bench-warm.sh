#!/usr/bin/env bash
# Warm-throughput benchmark.
#
# Warms BENCH_KEYS (100,000) keys from a fast local origin (Debian's nginx
# serving small files) into the real Redis (DB BENCH_REDIS_DB, 12) with the
# origin rate limit off, and in the same run measures the origin's own
# capacity with wrk over the same URLs. Target: the service moves at least 90%
# of the keys per second that the origin alone serves.
#
#   scripts/bench-warm.sh                      # from the repo root
#   BENCH_CONCURRENCY="32 64 128" scripts/bench-warm.sh
#   BENCH_CACHES="redis memory" scripts/bench-warm.sh   # also warm into memory://
#   BENCH_PERF=1 scripts/bench-warm.sh         # perf profile of the service (best effort)
#   BENCH_BINS="new=target/release/warming old=/tmp/warming-old" scripts/bench-warm.sh
#                                              # binaries side by side, alternating, one run
#                                              # (the first one's best is the RESULT)
#   BENCH_PERF_ARGS="-F 499 --call-graph dwarf"  # perf record options (default -F 999);
#                                                # BENCH_KEEP_PERF=path copies the profile there
#
# Settings (environment, defaults in brackets):
#   BENCH_KEYS [100000]   BENCH_CHUNK [10000] keys per POST /warm/key
#   BENCH_CONCURRENCY ["64 256"] WARMING_CONCURRENT_WARMERS values to sweep
#   BENCH_BATCH [100]     WARMING_MAX_BATCH_SIZE
#   BENCH_CACHES [redis]  any of: redis memory
#   BENCH_ORIGIN_HTTP ["http1 http2"] WARMING_ORIGIN_HTTP values to sweep (nginx
#                         serves HTTP/1.1 on BENCH_ORIGIN_PORT, h2c on BENCH_ORIGIN_H2_PORT)
#   BENCH_ORIGIN_PORT [18080]  BENCH_ORIGIN_H2_PORT [18082]  BENCH_SVC_PORT [18081]
#   BENCH_REDIS_DB [12]
#   BENCH_NGINX_WORKERS [2]    BENCH_WRK_THREADS [2] BENCH_WRK_CONNS [64]
#   BENCH_WRK_DURATION [10s]   BENCH_RUN_TIMEOUT [600] seconds per warm run
#   BENCH_SKIP_BUILD [0]  BENCH_PERF [0]  BENCH_STRICT [0] exit 2 if under target
#   BENCH_CLIENT_FLOOR [1] also fetch the keys with the service's origin client
#                         alone (examples/origin_floor.rs: no queue, cache,
#                         jobs or events): the most any warm run built on it
#                         could reach here
#   BENCH_QUIET_WAIT [0] wait up to this many seconds for 1-min load <= BENCH_QUIET_LOAD [1.0]
#
# Everything listens on and talks to 127.0.0.1 only. Cleans up on exit:
# stops nginx and the service, FLUSHDB of its own Redis DB, removes temp files.
# Exit status: 0 done (target met or not, unless BENCH_STRICT=1), 1 error or a
# failed check (keys missing in Redis, failed keys, origin errors), 2 under
# target with BENCH_STRICT=1.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=bench-warm
source scripts/bench/lib.sh

KEYS=${BENCH_KEYS:-100000}
CHUNK=${BENCH_CHUNK:-10000}
CONCURRENCY=${BENCH_CONCURRENCY:-"64 256"}
BATCH=${BENCH_BATCH:-100}
CACHES=${BENCH_CACHES:-redis}
HTTP_VERSIONS=${BENCH_ORIGIN_HTTP:-"http1 http2"}
ORIGIN_PORT=${BENCH_ORIGIN_PORT:-18080}
ORIGIN_H2_PORT=${BENCH_ORIGIN_H2_PORT:-18082}
SVC_PORT=${BENCH_SVC_PORT:-18081}
REDIS_DB=${BENCH_REDIS_DB:-12}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-2}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-64}
WRK_DURATION=${BENCH_WRK_DURATION:-10s}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-600}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
PERF=${BENCH_PERF:-0}
STRICT=${BENCH_STRICT:-0}
CLIENT_FLOOR=${BENCH_CLIENT_FLOOR:-1}
FLOOR_BIN=target/release/examples/origin_floor
TARGET_PCT=90
PREFIX="benchwarm:"
REDIS=(redis-cli -h 127.0.0.1 -p 6379 -n "$REDIS_DB")

clear_warming_env

# ---------------------------------------------------------------- cleanup
NGINX_PID="" SVC_PID="" PERF_PID=""
stop_processes() { # the cleanup trap's hook
  stop_pid "$CHILD" TERM 5
  stop_pid "$PERF_PID" INT 5
  stop_pid "$SVC_PID" TERM 10
  stop_pid "$NGINX_PID" TERM 5
}
install_cleanup

# ---------------------------------------------------------------- prerequisites
need nginx nginx
need wrk wrk
need redis-cli redis-tools
need curl curl
need python3 python3

ensure_redis
for p in "$ORIGIN_PORT" "$ORIGIN_H2_PORT" "$SVC_PORT"; do
  require_free_port "$p" "BENCH_ORIGIN_PORT / BENCH_ORIGIN_H2_PORT / BENCH_SVC_PORT"
done
# Only ever FLUSHDB a DB that holds nothing but this benchmark's own keys.
DB_KEYS=$("${REDIS[@]}" DBSIZE)
if ((DB_KEYS > 0)); then
  OURS=$("${REDIS[@]}" --scan --pattern "$PREFIX*" --count 1000 | wc -l)
  ((OURS == DB_KEYS)) ||
    die "Redis DB $REDIS_DB holds keys of someone else; pick another with BENCH_REDIS_DB"
  log "Redis DB $REDIS_DB holds $DB_KEYS leftover keys of an earlier run; flushing it"
  "${REDIS[@]}" FLUSHDB >/dev/null
fi

build_release
if [[ $CLIENT_FLOOR == 1 && $SKIP_BUILD != 1 ]]; then
  log "cargo build --release --example origin_floor"
  cargo build --release --quiet --example origin_floor
fi
make_work_dir warming-bench
wait_quiet
LOAD_START=$(loadavg)
log "load average at start: $LOAD_START (cores: $(nproc))"

# ---------------------------------------------------------------- origin data
write_origin_files "$KEYS"

# ---------------------------------------------------------------- nginx
start_nginx
log "nginx master $NGINX_PID, workers $NGINX_WORKER_PIDS"

# ---------------------------------------------------------------- origin capacity
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT"
log "origin warm-up: wrk 3s, not counted"
run_bg wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d3s -s scripts/bench/origin-random.lua "$ORIGIN_URL" -- "$KEYS" >/dev/null
nginx_ticks() { local t=0 p; for p in ${NGINX_WORKER_PIDS//,/ }; do
  t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
measure_origin() { # label -> sets ORIGIN_RPS_LAST, prints a one-line summary
  local label=$1 n0 n1 w0 w1 out="$WORK/wrk-origin-$1.txt" cores
  log "origin capacity ($label): wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION --latency (random keys of $KEYS)"
  n0=$(nginx_ticks); w0=$(date +%s.%N)
  run_bg wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$WRK_DURATION" --latency \
      -s scripts/bench/origin-random.lua "$ORIGIN_URL" -- "$KEYS" >"$out"
  n1=$(nginx_ticks); w1=$(date +%s.%N)
  cat "$out" >&2
  ORIGIN_RPS_LAST=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  [[ -n $ORIGIN_RPS_LAST ]] || die "could not read Requests/sec from wrk"
  if grep -q 'Non-2xx' "$out"; then die "origin answered non-2xx during wrk"; fi
  cores=$(awk -v t=$((n1 - n0)) -v hz="$(getconf CLK_TCK)" -v a="$w0" -v b="$w1" \
    'BEGIN {printf "%.2f", t / hz / (b - a)}')
  ORIGIN_LINES+=("origin ($label) under wrk -t$WRK_THREADS -c$WRK_CONNS -d$WRK_DURATION: $ORIGIN_RPS_LAST req/s, nginx workers $cores cores, load $(loadavg)")
  log "${ORIGIN_LINES[-1]}"
}
ORIGIN_LINES=()
measure_origin before
ORIGIN_RPS=$ORIGIN_RPS_LAST

# ---------------------------------------------------------------- client floor
# The service's own origin client (HttpOrigin, as the workers use it) fetching
# the same keys with nothing else to do: no queue, cache write, job, event.
FLOOR_LINES=()
client_floor() { # http concurrency
  local http=$1 conc=$2 url=$ORIGIN_URL n0 n1 w0 w1 out cores
  [[ $http == http2 ]] && url="http://127.0.0.1:$ORIGIN_H2_PORT"
  n0=$(nginx_ticks); w0=$(date +%s.%N)
  out=$(run_bg "$FLOOR_BIN" "$url/items/{key}" "$KEYS" "$conc" "$http") || { log "origin_floor failed"; return; }
  n1=$(nginx_ticks); w1=$(date +%s.%N)
  cores=$(awk -v t=$((n1 - n0)) -v hz="$(getconf CLK_TCK)" -v a="$w0" -v b="$w1" \
    'BEGIN {printf "%.2f", t / hz / (b - a)}')
  FLOOR_LINES+=("$(python3 -c 'import json,sys
d=json.loads(sys.argv[1]); o=float(sys.argv[2])
print("client floor (origin client alone, %s, %s tasks): %d keys/s = %.1f%% of the origin (first wrk run); client %.2f cores, %.1f us CPU per key; nginx %s cores; %d errors"
      % (sys.argv[3], sys.argv[4], d["keys_per_sec"], 100 * d["keys_per_sec"] / o,
         d["cpu_seconds"] / d["seconds"], 1e6 * d["cpu_seconds"] / d["keys"], sys.argv[5], d["errors"]))' \
    "$out" "$ORIGIN_RPS" "$http" "$conc" "$cores")")
  log "${FLOOR_LINES[-1]}"
}
if [[ $CLIENT_FLOOR == 1 ]]; then
  if [[ -x $FLOOR_BIN ]]; then
    for http in $HTTP_VERSIONS; do
      for conc in $CONCURRENCY; do client_floor "$http" "$conc"; done
    done
  else
    log "no $FLOOR_BIN (BENCH_SKIP_BUILD=1?): client floor skipped"
  fi
fi

# ---------------------------------------------------------------- service runs
REDIS_PID=$(redis_server_pid)
RESULTS=()
BEST_RATE=0 BEST_DESC=""
FAILED=0

check_redis() { # keys in Redis DB: count, sample values and TTLs
  local dbsize k n want got pttl bad=0
  dbsize=$("${REDIS[@]}" DBSIZE)
  if [[ $dbsize != "$KEYS" ]]; then log "CHECK FAILED: DBSIZE $dbsize, want $KEYS"; bad=1; fi
  for _ in $(seq 1 25); do
    n=$((RANDOM * 32768 + RANDOM)); n=$((n % KEYS)); k="k$n"
    want=$(cat "$WORK/www/items/$k")
    got=$("${REDIS[@]}" --raw GET "$PREFIX$k")
    pttl=$("${REDIS[@]}" PTTL "$PREFIX$k")
    if [[ $got != "$want" ]]; then log "CHECK FAILED: GET $PREFIX$k = ${got:0:60}, want ${want:0:60}"; bad=1; fi
    if ((pttl <= 0)); then log "CHECK FAILED: PTTL $PREFIX$k = $pttl"; bad=1; fi
  done
  ((bad == 0)) && log "Redis check ok: DBSIZE $dbsize, 25 sampled keys have the origin's bytes and PTTL > 0"
  return "$bad"
}

run_service() { # cache concurrency label binary http
  local cache=$1 conc=$2 label=$3 bin=$4 http=$5 cache_url state out rc json rate origin_url
  # nginx serves HTTP/1.1 on ORIGIN_PORT and HTTP/2 (h2c) on ORIGIN_H2_PORT.
  if [[ $http == http2 ]]; then origin_url="http://127.0.0.1:$ORIGIN_H2_PORT"
  else origin_url=$ORIGIN_URL; fi
  if [[ $cache == redis ]]; then
    cache_url="redis://127.0.0.1:6379/$REDIS_DB"
    FLUSH=1; "${REDIS[@]}" FLUSHDB >/dev/null
  else
    cache_url="memory://"
  fi
  state="$WORK/state-$label-$cache-$conc"; mkdir -p "$state"
  log "service $label ($bin): cache=$cache origin_http=$http concurrent_warmers=$conc max_batch_size=$BATCH (load $(loadavg))"
  env WARMING_LISTEN="127.0.0.1:$SVC_PORT" \
      WARMING_ORIGIN_URL="$origin_url/items/{key}" \
      WARMING_ORIGIN_HTTP="$http" \
      WARMING_CACHE_URL="$cache_url" \
      WARMING_CACHE_PREFIX="$PREFIX" \
      WARMING_MAX_ORIGIN_RPS=0 \
      WARMING_CONCURRENT_WARMERS="$conc" \
      WARMING_MAX_BATCH_SIZE="$BATCH" \
      WARMING_MAX_KEYS_PER_REQUEST="$CHUNK" \
      WARMING_BUILTIN_SCHEDULES=false \
      WARMING_STATE_DIR="$state" \
      WARMING_LOG=warn \
      "$bin" serve >"$WORK/service-$label-$cache-$conc.log" 2>&1 &
  SVC_PID=$!
  wait_service "http://127.0.0.1:$SVC_PORT" "$SVC_PID" "$WORK/service-$label-$cache-$conc.log" \
    service "127.0.0.1:$SVC_PORT"
  if [[ $PERF == 1 ]] && command -v perf >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # BENCH_PERF_ARGS is a list of options
    perf record ${BENCH_PERF_ARGS:--F 999} -p "$SVC_PID" -o "$WORK/perf-$label-$cache-$conc.data" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  local groups="warming=$SVC_PID;nginx=$NGINX_WORKER_PIDS"
  [[ $cache == redis && -n $REDIS_PID ]] && groups+=";redis=$REDIS_PID"
  rc=0
  run_bg python3 scripts/bench/warm_driver.py --url "http://127.0.0.1:$SVC_PORT" --keys "$KEYS" \
    --chunk "$CHUNK" --timeout "$RUN_TIMEOUT" --pids "$groups" >"$WORK/driver.out" || rc=$?
  json=$(cat "$WORK/driver.out")
  if [[ -n $PERF_PID ]]; then
    stop_pid "$PERF_PID" INT 10; PERF_PID=""
    [[ -n ${BENCH_KEEP_PERF:-} ]] && cp "$WORK/perf-$label-$cache-$conc.data" "$BENCH_KEEP_PERF"
    log "perf profile of the warming process, by object file:"
    perf report -i "$WORK/perf-$label-$cache-$conc.data" --sort dso --stdio 2>/dev/null |
      grep -v '^#' | grep '%' | head -8 >&2 || true
    log "perf profile of the warming process, top symbols:"
    perf report -i "$WORK/perf-$label-$cache-$conc.data" --sort dso,symbol --stdio 2>/dev/null |
      grep -v '^#' | grep '%' | head -40 | cut -c1-150 >&2 || true
  fi
  [[ -n $json ]] || { tail -20 "$WORK/service-$label-$cache-$conc.log" >&2; die "warm run failed"; }
  printf '%s\n' "$json" >"$WORK/run-$label-$cache-$conc.json"
  python3 - "$WORK/run-$label-$cache-$conc.json" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
m = r.get("metrics", {})
print(f"  {r['succeeded']} succeeded, {r['failed']} failed, {r['not_found']} not found, "
      f"all done: {r['all_done']}; submit {r['submit_s']}s; first submit -> last job done "
      f"{r['elapsed_s']}s = {r['keys_per_s']} keys/s")
print(f"  CPU (cores, 1.0 = one core): {r['cpu_cores']}")
print(f"  service metrics: origin_requests {m.get('origin_requests')}, cache_writes "
      f"{m.get('cache_writes')}, avg_duration_ms {m.get('avg_duration_ms')}, "
      f"emergency_stops {m.get('emergency_stops')}")
EOF
  rate=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["keys_per_s"])' "$WORK/run-$label-$cache-$conc.json")
  local succeeded
  succeeded=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["succeeded"])' "$WORK/run-$label-$cache-$conc.json")
  if ((rc != 0)) || [[ $succeeded != "$KEYS" ]]; then
    log "CHECK FAILED: $succeeded of $KEYS keys succeeded (driver exit $rc)"; FAILED=1
  fi
  if [[ $cache == redis ]]; then check_redis || FAILED=1; fi
  stop_pid "$SVC_PID" TERM 10; SVC_PID=""
  local cpu
  cpu=$(python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["cpu_cores"]
print(" ".join("%s=%s" % (k, v) for k, v in c.items() if k != "machine_cores"))' "$WORK/run-$label-$cache-$conc.json")
  RESULTS+=("$label|$cache|$http|$conc|$rate|$(loadavg)|$cpu")
  if [[ $cache == redis && $label == "$FIRST_LABEL" ]] &&
    awk -v a="$rate" -v b="$BEST_RATE" 'BEGIN {exit !(a > b)}'; then
    BEST_RATE=$rate BEST_DESC="origin_http=$http concurrent_warmers=$conc"
  fi
}

BINS=${BENCH_BINS:-"this=$BIN"}
FIRST_LABEL=${BINS%%=*}
for spec in $BINS; do
  [[ -x ${spec#*=} ]] || die "BENCH_BINS: ${spec#*=} is not an executable"
done
for cache in $CACHES; do
  for http in $HTTP_VERSIONS; do
    for conc in $CONCURRENCY; do
      for spec in $BINS; do
        run_service "$cache" "$conc" "${spec%%=*}" "${spec#*=}" "$http"
      done
    done
  done
done

measure_origin after
# The ratio uses the higher of the two origin figures: the stricter test.
if awk -v a="$ORIGIN_RPS_LAST" -v b="$ORIGIN_RPS" 'BEGIN {exit !(a > b)}'; then ORIGIN_RPS=$ORIGIN_RPS_LAST; fi

# ---------------------------------------------------------------- summary
PCT=$(awk -v a="$BEST_RATE" -v b="$ORIGIN_RPS" 'BEGIN {printf "%.1f", 100 * a / b}')
{
  echo
  echo "== warm throughput: $KEYS keys, batch $BATCH, rate limit off, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '%s\n' "${ORIGIN_LINES[@]}"
  ((${#FLOOR_LINES[@]} == 0)) || printf '%s\n' "${FLOOR_LINES[@]}"
  echo "origin capacity used for the ratio (the higher one): $ORIGIN_RPS req/s (nginx, $NGINX_WORKERS workers)"
  printf '%-9s %-7s %-6s %11s %10s %9s   %-15s  %s\n' binary cache http concurrency keys/s "of origin" "load after" "CPU cores during the run"
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r b c h n rate load cpu <<<"$r"
    printf '%-9s %-7s %-6s %11s %10s %8s%%   %-15s  %s\n' "$b" "$c" "$h" "$n" "$rate" \
      "$(awk -v a="$rate" -v b="$ORIGIN_RPS" 'BEGIN {printf "%.1f", 100 * a / b}')" "$load" "$cpu"
  done
  if [[ $CACHES == *redis* ]]; then
    echo "best into Redis: $BEST_RATE keys/s ($BEST_DESC) = $PCT% of the origin's $ORIGIN_RPS req/s; target $TARGET_PCT%"
    if awk -v p="$PCT" -v t="$TARGET_PCT" 'BEGIN {exit !(p >= t)}'; then echo "RESULT: target met"
    else echo "RESULT: BELOW TARGET"; fi
  fi
  echo "load average: start $LOAD_START, end $(loadavg)"
  for r in "${RESULTS[@]}"; do
    if [[ $r =~ other=([0-9.]+) ]] && awk -v o="${BASH_REMATCH[1]}" 'BEGIN {exit !(o > 0.3)}'; then
      echo "WARNING: other processes used > 0.3 cores during some runs (other=...): those figures are contended; rerun on a quiet machine (BENCH_QUIET_WAIT=300)"
      break
    fi
  done
} | tee "$WORK/summary.txt"
((FAILED == 0)) || die "a correctness check failed (see above)"
if [[ $STRICT == 1 && $CACHES == *redis* ]] && ! awk -v p="$PCT" -v t="$TARGET_PCT" 'BEGIN {exit !(p >= t)}'; then
  exit 2
fi

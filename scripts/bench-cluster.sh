#!/usr/bin/env bash
# Several-instances benchmark (issue 4): keys/s with 1 and with 3 instances
# against the same origin, and the time to recover a killed instance's keys.
#
# Same fast local origin as scripts/bench-warm.sh (Debian's nginx serving
# small files, scripts/bench/nginx.conf.template), the release binary, and the
# real Redis on 127.0.0.1:6379 DB BENCH_REDIS_DB (14) as both the cache and the
# coordinator. Runs, each with a fresh namespace and FLUSHDB of that DB first:
#   A0  1 instance, no coordination (the single-node fast path, reference)
#   A   1 instance, WARMING_COORDINATION=redis
#   B   3 instances, coordinated; keys submitted to instance 1, jobs polled
#       through instance 3; per-instance share from each /metrics
#   C   recovery: 3 instances, WARMING_VISIBILITY_TIMEOUT=5, origin limited
#       to BENCH_REC_RPS (2000/s, cluster-wide) so the job takes ~15 s;
#       instance 2 gets SIGKILL at BENCH_KILL_AT (30%) of the keys; measures
#       kill -> every key done, and kill -> the victim's claimed queue entries
#       all taken over by the others (XPENDING of its consumer reaches 0)
#
#   scripts/bench-cluster.sh                    # from the repo root
#   BENCH_RUNS="B C" BENCH_SKIP_BUILD=1 scripts/bench-cluster.sh
#
# Settings (environment, defaults in brackets):
#   BENCH_KEYS [30000] keys for A0/A/B   BENCH_CHUNK [10000] keys per POST /warm/key
#   BENCH_REC_KEYS [30000] keys for C    BENCH_REC_RPS [2000] WARMING_MAX_ORIGIN_RPS in C
#   BENCH_VISIBILITY [5] WARMING_VISIBILITY_TIMEOUT in C   BENCH_KILL_AT [0.3]
#   BENCH_CONCURRENCY [32] WARMING_CONCURRENT_WARMERS per instance
#   BENCH_RUNS ["A0 A B C"]  BENCH_INSTANCES [3] instances in B and C
#   BENCH_ORIGIN_PORT [18180]  BENCH_SVC_PORT [18181] first instance (then +1, +2)
#   BENCH_REDIS_DB [14]  BENCH_NGINX_WORKERS [2]  BENCH_RUN_TIMEOUT [300] s per run
#   BENCH_SKIP_BUILD [0]
#   BENCH_QUIET_WAIT [60] before each run, wait up to this many seconds while
#     a rustc runs or the 1-min load is above BENCH_QUIET_LOAD [1.5]
#
# Everything listens on and talks to 127.0.0.1 only. Cleans up on exit: kills
# the instances and nginx, FLUSHDB of its own Redis DB only, removes temp files.
# Exit status: 0 done, 1 error or a failed check (a key not succeeded, a cache
# key missing or wrong, the victim not killed).
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=bench-cluster
source scripts/bench/lib.sh

KEYS=${BENCH_KEYS:-30000}
CHUNK=${BENCH_CHUNK:-10000}
REC_KEYS=${BENCH_REC_KEYS:-30000}
REC_RPS=${BENCH_REC_RPS:-2000}
VIS=${BENCH_VISIBILITY:-5}
KILL_AT=${BENCH_KILL_AT:-0.3}
CONC=${BENCH_CONCURRENCY:-32}
RUNS=${BENCH_RUNS:-"A0 A B C"}
NINST=${BENCH_INSTANCES:-3}
ORIGIN_PORT=${BENCH_ORIGIN_PORT:-18180}
ORIGIN_H2_PORT=${BENCH_ORIGIN_H2_PORT:-18190} # nginx's h2c listener (unused here)
SVC_PORT=${BENCH_SVC_PORT:-18181}
REDIS_DB=${BENCH_REDIS_DB:-14}
NGINX_WORKERS=${BENCH_NGINX_WORKERS:-2}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
QUIET_WAIT=${BENCH_QUIET_WAIT:-60}
QUIET_LOAD=${BENCH_QUIET_LOAD:-1.5}
PREFIX="benchcluster:"
NS_PREFIX="bench-cluster-$$"
REDIS=(redis-cli -h 127.0.0.1 -p 6379 -n "$REDIS_DB")
((NINST >= 2)) || { echo "BENCH_INSTANCES must be at least 2" >&2; exit 1; }

clear_warming_env

rustcs() { pgrep -x rustc 2>/dev/null | wc -l; }
# Bounded wait for a quieter machine: other engineers' builds skew the figures.
# (Not lib.sh's wait_quiet: this one also waits while a rustc runs, 60 s by default.)
wait_quiet_cluster() {
  local end=$((SECONDS + QUIET_WAIT))
  while (($(rustcs) > 0)) ||
      awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v w="$QUIET_LOAD" 'BEGIN {exit !(l > w)}'; do
    if ((SECONDS >= end)); then
      log "still busy after ${QUIET_WAIT}s (load $(loadavg), $(rustcs) rustc); measuring anyway"
      return 0
    fi
    sleep 5
  done
}

# ---------------------------------------------------------------- cleanup
declare -a PIDS=()
stop_instances() {
  local p
  for p in "${PIDS[@]}"; do [[ -n $p ]] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do stop_pid "$p" TERM 10; done
  PIDS=()
}
stop_processes() { # the cleanup trap's hook
  stop_pid "$CHILD" TERM 5
  stop_instances
  stop_pid "$NGINX_PID" TERM 5
}
install_cleanup

# ---------------------------------------------------------------- prerequisites
need nginx nginx
need redis-cli redis-tools
need curl curl
need python3 python3

ensure_redis
for i in $(seq 0 "$NINST"); do
  p=$((i == 0 ? ORIGIN_PORT : SVC_PORT + i - 1))
  require_free_port "$p" "BENCH_ORIGIN_PORT / BENCH_SVC_PORT"
done
# Only ever FLUSHDB a DB that holds nothing but this benchmark's own keys
# (cache keys under $PREFIX, coordination keys of a bench-cluster namespace).
DB_KEYS=$("${REDIS[@]}" DBSIZE)
if ((DB_KEYS > 0)); then
  FOREIGN=$("${REDIS[@]}" --scan | grep -cv -e "^$PREFIX" -e '^warming:{bench-cluster-' || true)
  ((FOREIGN == 0)) ||
    die "Redis DB $REDIS_DB holds keys of someone else; pick another with BENCH_REDIS_DB"
  log "Redis DB $REDIS_DB holds $DB_KEYS leftover keys of an earlier run; flushing it"
  "${REDIS[@]}" FLUSHDB >/dev/null
fi
FLUSH=1
REDIS_PID=$(redis_server_pid)

build_release
BUILD_TIME=$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)

make_work_dir warming-bench-cluster

# ---------------------------------------------------------------- origin (as bench-warm.sh)
NFILES=$((KEYS > REC_KEYS ? KEYS : REC_KEYS))
write_origin_files "$NFILES"
start_nginx
ORIGIN_URL="http://127.0.0.1:$ORIGIN_PORT"
log "nginx master $NGINX_PID, workers $NGINX_WORKER_PIDS; load $(loadavg); $(nproc) cores"

# ---------------------------------------------------------------- instances
inst_url() { echo "http://127.0.0.1:$((SVC_PORT + $1 - 1))"; }
# start_instances label n coordinated(0|1) ns rps [extra VAR=value ...]
start_instances() {
  local label=$1 n=$2 coord=$3 ns=$4 rps=$5 i url end
  shift 5
  PIDS=()
  for i in $(seq 1 "$n"); do
    local state="$WORK/state-$label-$i"; mkdir -p "$state"
    local -a cenv=()
    ((coord)) && cenv=(WARMING_COORDINATION=redis WARMING_CLUSTER_NAMESPACE="$ns")
    env WARMING_LISTEN="127.0.0.1:$((SVC_PORT + i - 1))" \
        WARMING_INSTANCE_ID="bench-$label-$i" \
        WARMING_ORIGIN_URL="$ORIGIN_URL/items/{key}" \
        WARMING_CACHE_URL="redis://127.0.0.1:6379/$REDIS_DB" \
        WARMING_CACHE_PREFIX="$PREFIX" \
        WARMING_MAX_ORIGIN_RPS="$rps" \
        WARMING_CONCURRENT_WARMERS="$CONC" \
        WARMING_MAX_KEYS_PER_REQUEST="$CHUNK" \
        WARMING_BUILTIN_SCHEDULES=false \
        WARMING_STATE_DIR="$state" \
        WARMING_LOG=warn \
        "${cenv[@]}" "$@" \
        "$BIN" serve >"$WORK/service-$label-$i.log" 2>&1 &
    PIDS+=("$!")
  done
  for i in $(seq 1 "$n"); do
    url=$(inst_url "$i")
    wait_service "$url" "${PIDS[i - 1]}" "$WORK/service-$label-$i.log" "instance $i" "$url"
  done
  if ((coord)); then # every instance must see the others before the clock starts
    end=$((SECONDS + 15))
    until [[ $(curl -fsS --max-time 2 "$(inst_url 1)/warm/status" |
        python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("instances", [])))') == "$n" ]]; do
      ((SECONDS < end)) || die "instance 1 does not list $n instances"
      sleep 0.2
    done
  fi
}

check_cache() { # keys: count of cache keys and 25 sampled values/TTLs
  local want=$1 n got k v pttl bad=0
  got=$("${REDIS[@]}" --scan --pattern "$PREFIX*" | wc -l)
  if [[ $got != "$want" ]]; then log "CHECK FAILED: $got cache keys, want $want"; bad=1; fi
  for _ in $(seq 1 25); do
    n=$(((RANDOM * 32768 + RANDOM) % want)); k="k$n"
    v=$("${REDIS[@]}" --raw GET "$PREFIX$k")
    pttl=$("${REDIS[@]}" PTTL "$PREFIX$k")
    if [[ $v != "$(cat "$WORK/www/items/$k")" ]]; then log "CHECK FAILED: GET $PREFIX$k = ${v:0:60}"; bad=1; fi
    if ((pttl <= 0)); then log "CHECK FAILED: PTTL $PREFIX$k = $pttl"; bad=1; fi
  done
  ((bad == 0)) && log "cache check ok: $got keys under $PREFIX, 25 sampled values = origin bytes, PTTL > 0"
  return "$bad"
}

RESULTS=() RECOVERY=() FAILED=0
# run label n coordinated keys rps kill(0|1) [extra VAR=value ...]
run() {
  local label=$1 n=$2 coord=$3 keys=$4 rps=$5 kill=$6 ns="$NS_PREFIX-$1" i rc=0 urls="" pids
  shift 6
  "${REDIS[@]}" FLUSHDB >/dev/null
  wait_quiet_cluster
  local load0 up
  load0=$(loadavg); up=$(uptime | sed 's/^ *//')
  log "run $label: $n instance(s), coordination $( ((coord)) && echo "redis ($ns)" || echo off), $keys keys, max_origin_rps $rps $*"
  log "  uptime: $up; rustc running: $(rustcs)"
  start_instances "$label" "$n" "$coord" "$ns" "$rps" "$@"
  for i in $(seq 1 "$n"); do urls+="${urls:+,}$(inst_url "$i")"; done
  pids=$(IFS=,; echo "${PIDS[*]}")
  local -a args=(--url "$(inst_url 1)" --poll-url "$(inst_url "$n")" --keys "$keys" --chunk "$CHUNK"
    --timeout "$RUN_TIMEOUT" --metrics-urls "$urls"
    --pids "warming=$pids;nginx=$NGINX_WORKER_PIDS${REDIS_PID:+;redis=$REDIS_PID}")
  if ((kill)); then
    args+=(--kill-pid "${PIDS[1]}" --kill-at "$KILL_AT" --redis-port 6379 --redis-db "$REDIS_DB"
      --namespace "$ns" --victim "bench-$label-2")
  fi
  run_bg python3 scripts/bench/warm_driver.py "${args[@]}" >"$WORK/run-$label.json" || rc=$?
  if [[ ! -s $WORK/run-$label.json ]]; then
    for i in $(seq 1 "$n"); do tail -5 "$WORK/service-$label-$i.log" >&2; done
    die "run $label: driver failed (exit $rc)"
  fi
  python3 - "$WORK/run-$label.json" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['succeeded']} succeeded, {r['failed']} failed, {r['not_found']} not found, all done: "
      f"{r['all_done']}; submit {r['submit_s']}s; first submit -> last job done {r['elapsed_s']}s "
      f"= {r['keys_per_s']} keys/s")
print(f"  per instance (warming_success_total): {r.get('per_instance_success')}")
print(f"  CPU (cores): {r['cpu_cores']}")
if "killed" in r:
    print(f"  kill: {r['killed']} at +{r['kill_after_s']}s, progress {r['progress_at_kill']}; victim held "
          f"{r['victim_pending_at_kill']} queue entries, all taken over {r['victim_reclaimed_s']}s after the "
          f"kill; every key done {r['kill_to_done_s']}s after the kill")
EOF
  local succeeded
  succeeded=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["succeeded"])' "$WORK/run-$label.json")
  if ((rc != 0)) || [[ $succeeded != "$keys" ]]; then
    log "CHECK FAILED: run $label: $succeeded of $keys keys succeeded (driver exit $rc)"; FAILED=1
  fi
  if ((kill)) && [[ $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["killed"])' "$WORK/run-$label.json") != True ]]; then
    log "CHECK FAILED: run $label: the victim was not killed (job finished before $KILL_AT)"; FAILED=1
  fi
  check_cache "$keys" || FAILED=1
  stop_instances
  RESULTS+=("$(python3 - "$WORK/run-$label.json" "$label" "$n" "$coord" "$load0" "$(loadavg)" "$urls" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
label, n, coord, load0, load1, urls = sys.argv[2:8]
per = r.get("per_instance_success") or {}
share = " / ".join("dead" if per.get(u) is None else str(per[u]) for u in urls.split(","))
c = r["cpu_cores"]
cpu = "%s / %s / %s / %s" % (c.get("warming"), c.get("nginx"), c.get("redis", "-"), c.get("other"))
print("|".join([label, n, "redis" if coord == "1" else "off", str(r["total"]), str(r["succeeded"]),
                "%.2f" % r["elapsed_s"], "%.0f" % r["keys_per_s"], share, cpu, load0, load1]))
EOF
)")
  if ((kill)); then
    RECOVERY+=("$(python3 - "$WORK/run-$label.json" "$rps" "$VIS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
rps, vis = float(sys.argv[2]), float(sys.argv[3])
ideal = r["total"] / rps if rps else 0
print(f"run {r.get('label', 'C')}: {r['total']} keys at max_origin_rps {rps:.0f} (ideal {ideal:.1f}s), "
      f"visibility timeout {vis:.0f}s. SIGKILL of instance 2 at +{r['kill_after_s']}s "
      f"({100 * (r['progress_at_kill'] or 0):.0f}% done); it held {r['victim_pending_at_kill']} claimed "
      f"queue entries; all taken over by the others {r['victim_reclaimed_s']}s after the kill; "
      f"every key done {r['kill_to_done_s']}s after the kill (whole job {r['elapsed_s']:.1f}s); "
      f"succeeded {r['succeeded']} of {r['total']}")
EOF
)")
  fi
}

for r in $RUNS; do
  case $r in
    A0) run A0 1 0 "$KEYS" 0 0 ;;
    A) run A 1 1 "$KEYS" 0 0 ;;
    B) run B "$NINST" 1 "$KEYS" 0 0 ;;
    C) run C "$NINST" 1 "$REC_KEYS" "$REC_RPS" 1 WARMING_VISIBILITY_TIMEOUT="$VIS" ;;
    *) die "unknown run $r (want A0 A B C)" ;;
  esac
done

# ---------------------------------------------------------------- summary
{
  echo
  echo "== several instances: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores shared by every instance, nginx ($NGINX_WORKERS workers) and Redis"
  echo "binary built $BUILD_TIME; concurrent_warmers $CONC per instance; cache and coordinator: Redis DB $REDIS_DB"
  printf '%-3s %4s %6s %6s %9s %8s %8s  %-26s %-24s %s\n' run inst coord keys succeeded "time s" keys/s \
    "success per instance" "CPU warm/nginx/redis/oth" "load before -> after"
  for r in "${RESULTS[@]}"; do
    IFS='|' read -r l n c k s t ks share cpu l0 l1 <<<"$r"
    printf '%-3s %4s %6s %6s %9s %8s %8s  %-26s %-24s %s -> %s\n' "$l" "$n" "$c" "$k" "$s" "$t" "$ks" "$share" "$cpu" "$l0" "$l1"
  done
  ((${#RECOVERY[@]} == 0)) || printf 'recovery: %s\n' "${RECOVERY[@]}"
  echo "keys/s = succeeded keys / (first POST /warm/key -> latest job finished_at); run C is rate-bound by design"
} | tee "$WORK/summary.txt"
((FAILED == 0)) || die "a correctness check failed (see above)"

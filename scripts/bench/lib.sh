# Shared functions of the benchmark scripts (scripts/bench-*.sh); sourced, not run.
#
# The sourcing script cds to the repo root, sets LOG_TAG (the name in its log
# lines, e.g. bench-warm) and then sources this file. It must define
# stop_processes (called by the EXIT trap) before calling install_cleanup.
# Globals used here: WORK (temp dir), CHILD (run_bg), FLUSH and REDIS (the
# redis-cli command of the benchmark's own DB), SKIP_BUILD, NGINX_WORKERS,
# ORIGIN_PORT; set here: BIN, NGINX_PID, NGINX_WORKER_PIDS.

BIN=target/release/warming
WORK="" CHILD="" FLUSH=0 APT_UPDATED=0 NGINX_PID="" NGINX_WORKER_PIDS=""

# Nothing from the caller's environment may change the service under test.
clear_warming_env() {
  local v
  while read -r v; do unset "$v"; done < <(compgen -e | grep '^WARMING_' || true)
}

# Timestamped log line on stderr.
log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_TAG" -1 "$*" >&2; }
# Logs an error and exits 1 (which runs the cleanup trap).
die() { log "ERROR: $*"; exit 1; }
# The 1-, 5- and 15-minute load averages.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# True if something listens on 127.0.0.1:port.
port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# Waits up to `seconds` for 127.0.0.1:port to accept connections.
wait_port() { # port seconds
  local end=$((SECONDS + $2))
  while ((SECONDS < end)); do port_open "$1" && return 0; sleep 0.1; done
  return 1
}
# Dies if 127.0.0.1:port is taken; hint names the settings that move it.
require_free_port() { # port hint
  if port_open "$1"; then die "port 127.0.0.1:$1 is in use; set $2"; fi
}

# Optionally wait (bounded) for a quiet machine: other builds skew the figures.
# BENCH_QUIET_WAIT [0] seconds at most, for a 1-min load <= BENCH_QUIET_LOAD [1.0].
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

# ---------------------------------------------------------------- processes and cleanup
# Runs a long command in the background and waits for it, so that a signal
# to the script runs the cleanup trap at once instead of after the command.
run_bg() {
  local rc=0
  "$@" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return "$rc"
}
# Sends `signal` to pid, waits up to `seconds` for it to end, then SIGKILL; reaps it.
stop_pid() { # pid signal seconds
  local pid=$1
  [[ -n $pid ]] || return 0
  if ! kill -0 "$pid" 2>/dev/null; then { wait "$pid"; } 2>/dev/null || true; return 0; fi
  kill "-$2" "$pid" 2>/dev/null || true
  for _ in $(seq 1 $(($3 * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || true
}
# EXIT trap: the script's stop_processes, FLUSHDB of its own Redis DB if
# FLUSH=1, removes $WORK; keeps the exit status.
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e # a failing step must not cut the cleanup short
  stop_processes
  if ((FLUSH)); then "${REDIS[@]}" FLUSHDB >/dev/null 2>&1 || true; fi
  [[ -n $WORK && -d $WORK ]] && rm -rf "$WORK"
  exit "$rc"
}
# Installs cleanup on exit; SIGINT / SIGTERM exit 130 / 143 through it.
install_cleanup() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# ---------------------------------------------------------------- prerequisites
# Installs the Debian package unless the command is there (PATH or /usr/sbin).
need() { # command package
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] && return 0
  log "installing $2"
  if ((!APT_UPDATED)); then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
  command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]] || die "could not install $2"
}
# Starts a throwaway Redis on 127.0.0.1:6379 unless one is listening there.
ensure_redis() {
  port_open 6379 && return 0
  need redis-server redis-server
  log "starting Redis on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_port 6379 10 || die "Redis did not come up on 127.0.0.1:6379"
}
# Pid of the Redis server behind $REDIS (empty if it does not say).
redis_server_pid() {
  "${REDIS[@]}" INFO server | awk -F: '/^process_id:/ {gsub("\r",""); print $2}'
}
# cargo build --release unless BENCH_SKIP_BUILD=1; dies without $BIN.
build_release() {
  if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    cargo build --release --quiet
  fi
  [[ -x $BIN ]] || die "$BIN not found"
}
# Creates $WORK (on tmpfs when there is one: creating 100,000 files on the
# root filesystem here costs ~40 s of kernel time; nginx reads them from the
# page cache either way), readable by nginx's unprivileged workers.
make_work_dir() { # name
  local base=/tmp
  [[ -d /dev/shm && -w /dev/shm ]] && base=/dev/shm
  WORK=$(mktemp -d "$base/$1.XXXXXX")
  chmod 755 "$WORK" # nginx workers run as an unprivileged user
}

# ---------------------------------------------------------------- origin
# Writes n small JSON files $WORK/www/items/k0 .. k<n-1> (100-200 bytes, seeded).
write_origin_files() { # n
  log "writing $1 small files to $WORK/www/items"
  python3 - "$WORK/www/items" "$1" <<'EOF'
import os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d)
rnd = random.Random(42)
for i in range(n):
    head = '{"key":"k%d","value":"' % i
    size = rnd.randint(100, 200)
    pad = "x" * max(0, size - len(head) - 2)
    with open(os.path.join(d, "k%d" % i), "w") as f:
        f.write(head + pad + '"}')
EOF
  chmod -R a+rX "$WORK/www"
}
# Starts nginx (scripts/bench/nginx.conf.template, NGINX_WORKERS workers) on
# 127.0.0.1:ORIGIN_PORT serving $WORK/www, checks it serves k0; sets NGINX_PID
# and NGINX_WORKER_PIDS (comma-separated).
start_nginx() {
  local nginx got
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  mkdir -p "$WORK/nginx"
  sed -e "s|@WORKERS@|$NGINX_WORKERS|g" -e "s|@PREFIX@|$WORK/nginx|g" \
      -e "s|@DATA@|$WORK/www|g" -e "s|@PORT@|$ORIGIN_PORT|g" -e "s|@H2PORT@|$ORIGIN_H2_PORT|g" \
      scripts/bench/nginx.conf.template >"$WORK/nginx/nginx.conf"
  "$nginx" -q -t -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" ||
    die "nginx config test failed"
  "$nginx" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" &
  NGINX_PID=$!
  wait_port "$ORIGIN_PORT" 10 || die "nginx did not come up on 127.0.0.1:$ORIGIN_PORT"
  got=$(curl -sS --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/items/k0")
  [[ $got == "$(cat "$WORK/www/items/k0")" ]] || die "origin answered ${got:0:80} for k0"
  sleep 0.5
  NGINX_WORKER_PIDS=$(pgrep -P "$NGINX_PID" | paste -sd, -)
}

# ---------------------------------------------------------------- service
# Waits up to 30 s for GET url/warm/status to answer 2xx; if the process dies
# or time runs out, shows the end of its log and dies "<name> did not come up on <where>".
wait_service() { # url pid logfile name where
  local end=$((SECONDS + 30))
  until curl -fsS --max-time 2 "$1/warm/status" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null || ((SECONDS >= end)); then
      tail -20 "$3" >&2
      die "$4 did not come up on $5"
    fi
    sleep 0.1
  done
}

#!/usr/bin/env python3
"""Drives one warm run of scripts/bench-warm.sh and scripts/bench-cluster.sh
(standard library only).

Submits keys k<start>..k<start+count-1> to POST /warm/key in requests of
--chunk keys, waits (bounded) until every job is done, and prints one JSON
object: timings, keys/s and per-job outcome counts. The clock starts just
before the first submit and stops at the latest `finished_at` of the jobs
(server clock, same machine); the poll-observed end is reported too.

Optional, for several instances (bench-cluster.sh); without these options the
behaviour and output are those of bench-warm.sh:
  --poll-url        ask this instance for status and jobs (default --url)
  --metrics-urls    comma-separated instance URLs: their /metrics
                    warming_success_total is reported per instance
                    ("per_instance_success") and is the progress measure
                    for --kill-at
  --kill-pid/--kill-at  SIGKILL that pid once the summed warming_success_total
                    reaches this fraction of --keys; reports the kill time
                    and "kill_to_done_s" (kill -> latest finished_at)
  --redis-port/--redis-db/--namespace/--victim  also watch the victim
                    consumer's entries in the shared queue (XPENDING on the
                    namespace's three streams, group "warmers") and report
                    how many it held at the kill and when the last one was
                    taken over by another instance ("victim_reclaimed_s")
Exit status: 0 ok, 1 a job did not finish or a request failed.
"""
import argparse
import json
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from datetime import datetime, timezone


def call(method, url, body=None, timeout=30.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_ts(s):
    """RFC 3339 with up to nanoseconds -> Unix seconds (float)."""
    m = _TS.match(s)
    if not m:
        raise ValueError(f"unparsable timestamp {s!r}")
    base, frac, tz = m.groups()
    tz = "+00:00" if tz == "Z" else tz
    dt = datetime.fromisoformat(base + tz)
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def success_total(url):
    """warming_success_total from one instance's /metrics, None if unreachable."""
    try:
        req = urllib.request.Request(f"{url}/metrics")
        with urllib.request.urlopen(req, timeout=2) as r:
            text = r.read().decode()
    except Exception:
        return None
    for line in text.splitlines():
        if line.startswith("warming_success_total "):
            return float(line.split()[-1])
    return 0.0


class Resp:
    """A minimal RESP client (loopback Redis), enough for XPENDING."""

    def __init__(self, port, db):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.s.makefile("rb")
        self.cmd("SELECT", str(db))

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.s.sendall(out)
        return self._read()

    def _read(self):
        line = self.f.readline().rstrip(b"\r\n")
        t, rest = line[:1], line[1:]
        if t in (b"+", b"-"):
            return rest.decode()
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode()
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ValueError(f"unexpected RESP {line!r}")


def victim_pending(redis, namespace, victim):
    """Entries of the shared queue currently claimed by consumer `victim`."""
    total = 0
    for band in ("high", "mid", "low"):
        r = redis.cmd("XPENDING", f"warming:{{{namespace}}}:queue:{band}", "warmers")
        if isinstance(r, list) and len(r) == 4 and r[3]:
            for consumer, count in r[3]:
                if consumer == victim:
                    total += int(count)
    return total


def parse_groups(spec):
    groups = {}
    for part in filter(None, spec.split(";")):
        name, _, pids = part.partition("=")
        groups[name] = [int(p) for p in pids.split(",") if p.strip()]
    return groups


def proc_ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    except (OSError, IndexError, ValueError):
        return 0


def system_ticks():
    """(busy, total) ticks over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def cpu_snapshot(groups):
    snap = {name: sum(proc_ticks(p) for p in pids) for name, pids in groups.items()}
    snap["_system"] = system_ticks()
    return snap


def cpu_usage(a, b, seconds):
    """Cores used by each group (1.0 = one core busy) and by the whole machine."""
    out = {}
    for name in a:
        if name == "_system":
            continue
        out[name] = round((b[name] - a[name]) / CLK_TCK / seconds, 2) if seconds > 0 else 0.0
    busy = b["_system"][0] - a["_system"][0]
    total = b["_system"][1] - a["_system"][1]
    ncpu = os.cpu_count() or 1
    out["machine_busy"] = round(busy / total * ncpu, 2) if total else 0.0
    # Whatever else ran: this driver, softirqs not charged to a process, and
    # other people's builds (a large value means the figure is contended).
    out["other"] = round(max(0.0, out["machine_busy"] - sum(
        v for k, v in out.items() if k != "machine_busy")), 2)
    out["machine_cores"] = ncpu
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:18081")
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--chunk", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    ap.add_argument("--poll", type=float, default=0.1)
    ap.add_argument("--pids", default="",
                    help="CPU accounting groups, e.g. 'warming=12;nginx=34,35;redis=56'")
    ap.add_argument("--poll-url", default="", help="instance polled for status and jobs")
    ap.add_argument("--metrics-urls", default="", help="instances whose /metrics are read")
    ap.add_argument("--kill-pid", type=int, default=0)
    ap.add_argument("--kill-at", type=float, default=0.3)
    ap.add_argument("--redis-port", type=int, default=0)
    ap.add_argument("--redis-db", type=int, default=0)
    ap.add_argument("--namespace", default="")
    ap.add_argument("--victim", default="", help="instance id (queue consumer) of --kill-pid")
    a = ap.parse_args()
    groups = parse_groups(a.pids)
    poll_url = a.poll_url or a.url
    murls = [u for u in a.metrics_urls.split(",") if u]
    last_success = {u: 0.0 for u in murls}
    redis = Resp(a.redis_port, a.redis_db) if a.redis_port and a.namespace and a.victim else None
    kill = {"t_kill": None, "progress_at_kill": None, "victim_pending_at_kill": None,
            "victim_reclaimed_at": None}

    def watch_kill():
        """Called between polls: kill the victim at the set progress, then
        watch its queue entries being taken over."""
        if not a.kill_pid:
            return
        if kill["t_kill"] is None:
            done = 0.0
            for u in murls:
                v = success_total(u)
                if v is not None:
                    last_success[u] = v
                done += last_success[u]
            if done >= a.kill_at * a.keys:
                os.kill(a.kill_pid, signal.SIGKILL)
                kill["t_kill"] = time.time()
                kill["progress_at_kill"] = round(done / a.keys, 3)
                if redis:
                    kill["victim_pending_at_kill"] = victim_pending(redis, a.namespace, a.victim)
                    if kill["victim_pending_at_kill"] == 0:
                        kill["victim_reclaimed_at"] = kill["t_kill"]
        elif redis and kill["victim_reclaimed_at"] is None:
            if victim_pending(redis, a.namespace, a.victim) == 0:
                kill["victim_reclaimed_at"] = time.time()

    deadline = time.time() + a.timeout
    jobs = []
    queued = dedup = skipped = 0
    cpu0 = cpu_snapshot(groups)
    t0 = time.time()
    for start in range(0, a.keys, a.chunk):
        keys = [f"k{n}" for n in range(start, min(start + a.chunk, a.keys))]
        r = call("POST", f"{a.url}/warm/key", {"keys": keys})
        jobs.append(r["job_id"])
        queued += r.get("queued", 0)
        dedup += r.get("deduplicated", 0)
        skipped += r.get("skipped_recent", 0)
    t_submitted = time.time()

    # Cheap poll first: /warm/status is small, a job view lists all its keys.
    status = {}
    while time.time() < deadline:
        watch_kill()
        status = call("GET", f"{poll_url}/warm/status", timeout=10)
        if status.get("active_jobs", 1) == 0 and status.get("queued_tasks", 1) == 0:
            break
        time.sleep(a.poll)
    t_idle = time.time()
    if kill["t_kill"] is not None:
        watch_kill()  # the queue may have emptied between the last check and now
    cpu1 = cpu_snapshot(groups)

    views = {}
    while time.time() < deadline:
        for j in jobs:
            if j not in views or not views[j]["done"]:
                views[j] = call("GET", f"{poll_url}/warm/jobs/{j}", timeout=30)
        if all(v["done"] for v in views.values()):
            break
        time.sleep(0.5)
    all_done = len(views) == len(jobs) and all(v["done"] for v in views.values())

    finished = [parse_ts(v["finished_at"]) for v in views.values() if v.get("finished_at")]
    t_end = max(finished) if finished and all_done else t_idle
    elapsed = t_end - t0
    tot = {k: sum(v.get(k, 0) for v in views.values())
           for k in ("total", "succeeded", "failed", "not_found", "deduplicated", "skipped_recent")}
    out = {
        "jobs": len(jobs),
        "all_done": all_done,
        "queued": queued,
        "deduplicated_at_submit": dedup,
        "skipped_recent_at_submit": skipped,
        "submit_s": round(t_submitted - t0, 3),
        "elapsed_s": round(elapsed, 3),
        "elapsed_poll_s": round(t_idle - t0, 3),
        "keys_per_s": round(tot["succeeded"] / elapsed, 1) if elapsed > 0 else 0.0,
        **tot,
        "cpu_cores": cpu_usage(cpu0, cpu1, t_idle - t0),
        "metrics": status.get("metrics", {}),
        "t0": t0,
        "t_end": t_end,
    }
    if murls:
        per = {}
        for u in murls:
            v = success_total(u)
            per[u] = None if v is None else int(v)
        out["per_instance_success"] = per
    if a.kill_pid:
        tk = kill["t_kill"]
        out["killed"] = tk is not None
        out["t_kill"] = tk
        out["kill_after_s"] = round(tk - t0, 3) if tk else None
        out["progress_at_kill"] = kill["progress_at_kill"]
        out["kill_to_done_s"] = round(t_end - tk, 3) if tk and all_done else None
        out["victim_pending_at_kill"] = kill["victim_pending_at_kill"]
        vr = kill["victim_reclaimed_at"]
        out["victim_reclaimed_s"] = round(vr - tk, 3) if tk and vr else None
    print(json.dumps(out))
    return 0 if all_done else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one line on stderr, non-zero exit
        print(f"warm_driver: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)

#!/usr/bin/env python3
"""How well can any predictor that sees only a key's own access history tell,
when the key's cached value expires, whether it will be read again within one
more TTL (i.e. whether refreshing it saves a miss)?

For every "expiry event" of a trace (a read at t with no read in (t, t+TTL],
t+TTL before the end of the trace) it computes the key's history features at
the expiry (count, age, mean/last/max gap, reads in the hour and 10 minutes
before the last read, the key's number), labels the event "read again within
(t+TTL, t+2 TTL]", trains scikit-learn's gradient-boosted trees on the first
half of the events in time and prints the precision reached on the second
half at several recalls, next to the base rate.

A refresh pays for itself in origin fetches per hit only when its chance of
saving a miss is above hits / (hits + fetches) of the cache without warming
(0.68 for web07, 0.37 for cloudPhysicsIO with the replay defaults).

    pip install numpy scikit-learn
    python3 scripts/analysis/expiry-predictability.py ../shared/traces/web07.trace.xz
    python3 scripts/analysis/expiry-predictability.py ../shared/traces/cloudPhysicsIO.csv
"""

import argparse
import bisect
import collections
import csv
import lzma
import struct

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import precision_recall_curve


def load(path, rate):
    """(time, key) pairs in trace order."""
    if path.endswith(".xz"):
        data = lzma.open(path).read()
        keys = struct.unpack(">%di" % (len(data) // 4), data)
        return [(i / rate, k) for i, k in enumerate(keys)]
    with open(path) as f:
        rows = csv.reader(f)
        next(rows)  # version,time,op,size,lbn
        return [(float(r[1]), int(r[4])) for r in rows]


def events(trace, ttl):
    by_key = collections.defaultdict(list)
    for t, k in trace:
        by_key[k].append(t)
    end = trace[-1][0]
    xs, ys, at = [], [], []
    for k, times in by_key.items():
        for j, t in enumerate(times):
            nxt = times[j + 1] if j + 1 < len(times) else None
            expiry = t + ttl
            if (nxt is not None and nxt <= expiry) or expiry >= end:
                continue
            past = times[: j + 1]
            gaps = np.diff(past) if j > 0 else np.zeros(1)
            xs.append([
                j + 1,
                t - past[0],
                gaps.mean(),
                gaps[-1],
                gaps.max(),
                j + 1 - bisect.bisect_left(past, t - 3600),
                j + 1 - bisect.bisect_left(past, t - 600),
                k,
            ])
            ys.append(int(nxt is not None and nxt <= expiry + ttl))
            at.append(expiry)
    order = np.argsort(at, kind="stable")
    return np.array(xs)[order], np.array(ys)[order]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--ttl", type=float, default=3600.0)
    ap.add_argument("--rate", type=float, default=10.0, help="requests/s of a trace without timestamps")
    a = ap.parse_args()
    x, y = events(load(a.trace, a.rate), a.ttl)
    half = len(y) // 2
    model = HistGradientBoostingClassifier(random_state=1).fit(x[:half], y[:half])
    p = model.predict_proba(x[half:])[:, 1]
    precision, recall, _ = precision_recall_curve(y[half:], p)
    print(f"expiry events {len(y)}; re-read within one more TTL: {y.mean():.3f} "
          f"(held-out half: {y[half:].mean():.3f})")
    for r in (0.1, 0.3, 0.5, 0.7):
        i = np.where(recall >= r)[0][-1]
        print(f"recall >= {r:.1f}: precision {precision[i]:.3f}")


if __name__ == "__main__":
    main()

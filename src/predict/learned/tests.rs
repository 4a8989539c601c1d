//! Unit tests of the learned predictor: state through `observe`, online
//! training on a synthetic periodic pattern, bounded top-K and memory.

use super::*;

const T0: u64 = 1_700_000_000;

fn small(max_keys: usize) -> LearnedConfig {
    LearnedConfig {
        max_keys,
        gate: Gate::Off,
        ..LearnedConfig::default()
    }
}

#[test]
fn observe_builds_the_features_of_a_hand_made_history() {
    let p = LearnedPredictor::new(small(1000));
    // user:1:a at T0, T0+60, T0+120; user:1:b once at T0+100 (same prefix).
    for t in [0, 60, 120] {
        p.observe("user:1:a", T0 + t);
    }
    p.observe("user:1:b", T0 + 100);
    let f = p.features_of("user:1:a", T0 + 180, 600).unwrap();
    assert!(
        (f[4] - 1f32.ln_1p()).abs() < 1e-3,
        "1 min since last: {f:?}"
    );
    assert!((f[5] - 3f32.ln_1p()).abs() < 1e-3, "3 accesses");
    assert!((f[6] - 3f32.ln_1p()).abs() < 1e-3, "first seen 3 min ago");
    assert!((f[7] - 61f32.ln()).abs() < 1e-3, "gaps of 60 s");
    assert_eq!(f[10], 1.0);
    // The prefix saw 4 accesses within 3 min: its 30-min count is a bit under 4.
    let prefix_30m = f[14].exp_m1();
    assert!(prefix_30m > 3.8 && prefix_30m < 4.0, "{prefix_30m}");
    let b = p.features_of("user:1:b", T0 + 180, 600).unwrap();
    assert_eq!(b[14], f[14], "same prefix, same prefix features");
    assert_eq!(b[10], 0.0, "one access: no gaps");
    assert!(p.features_of("user:2:a", T0, 600).is_none());
}

/// Keys `p:i` are requested every 300 s (phase `i`); noise keys `n:j` once
/// each. Labels for a 60-s horizon depend on the phase of the periodic keys,
/// which the prior weights do not know. Training must lower the log-loss on
/// fresh examples.
#[test]
fn training_improves_log_loss_on_a_periodic_pattern() {
    let cfg = LearnedConfig {
        max_keys: 10_000,
        sample_every_secs: 10,
        samples: 64,
        max_horizon_secs: 60,
        default_horizon_secs: 60,
        learning_rate: 0.1,
        gate: Gate::Off,
        ..LearnedConfig::default()
    };
    let p = LearnedPredictor::new(cfg);
    let period = 300u64;
    let periodic = 40u64;
    let noise = std::cell::Cell::new(0u64);
    let mut rng = 7u64;
    let mut step = |p: &LearnedPredictor, t: u64| {
        let mut n = noise.get();
        for i in 0..periodic {
            if t % period == (i * period / periodic) {
                p.observe(&format!("p:{i}"), T0 + t);
            }
        }
        // ~1 new noise key per second, one in 4 seen again once later.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        n += 1;
        noise.set(n);
        p.observe(&format!("n:{n}"), T0 + t);
        if (rng >> 33) % 4 == 0 && n > 100 {
            p.observe(&format!("n:{}", n - 100), T0 + t);
        }
        if t % 5 == 0 {
            p.tick(T0 + t);
        }
    };
    // Warm up without training so every key has a history.
    for t in 0..2 * period {
        step(&p, t);
    }
    let prior = p.model.read().clone();
    let train_until = 2 * period + 7200;
    for t in 2 * period..train_until {
        step(&p, t);
    }
    let trained = p.model.read().clone();
    // Fresh examples: features at `at`, label = accessed in (at, at + 60].
    let at = T0 + train_until;
    let keys: Vec<String> = (0..periodic)
        .map(|i| format!("p:{i}"))
        .chain((noise.get() - 200..noise.get()).map(|j| format!("n:{j}")))
        .collect();
    let xs: Vec<Features> = keys
        .iter()
        .map(|k| p.features_of(k, at, 60).unwrap())
        .collect();
    for t in train_until + 1..=train_until + 60 {
        step(&p, t);
    }
    let ys: Vec<bool> = keys
        .iter()
        .zip(&xs)
        // Accessed in (at, at + 60] iff its access count grew.
        .map(|(k, x)| p.features_of(k, at + 60, 60).unwrap()[5] > x[5])
        .collect();
    assert!(ys.iter().any(|&y| y) && ys.iter().any(|&y| !y));
    let loss = |m: &Logistic| {
        xs.iter()
            .zip(&ys)
            .map(|(x, &y)| m.log_loss(x, y))
            .sum::<f64>()
            / xs.len() as f64
    };
    let (before, after) = (loss(&prior), loss(&trained));
    let st = p.stats();
    assert!(st.examples > 5000, "{st:?}");
    assert!(
        after < before * 0.95,
        "log-loss {before:.4} -> {after:.4}; {st:?}"
    );
}

#[test]
fn predict_returns_a_bounded_sorted_top_k() {
    let p = LearnedPredictor::new(small(10_000));
    for i in 0..500u64 {
        for _ in 0..=(i % 10) {
            p.observe(&format!("k:{i}"), T0 + i);
        }
    }
    p.tick(T0 + 500);
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let top = p.predict(&tracker, T0 + 500, Duration::from_secs(600), 20);
    assert_eq!(top.len(), 20);
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score), "{top:?}");
    assert!(top.iter().all(|x| x.score > 0.0 && x.score < 1.0));
    // The hottest recent keys (10 accesses each, the latest ones) come first.
    assert!(top[0].key.starts_with("k:4"), "{top:?}");
    assert!(p.predict(&tracker, T0 + 500, Duration::ZERO, 0).is_empty());
    assert_eq!(
        p.predict(&tracker, T0 + 500, Duration::from_secs(60), 10_000)
            .len(),
        500
    );
}

/// With a gate of one hour and a band of 120 s, only keys whose value
/// expires within 60 s of now (or would, rewritten at each expiry) are
/// predicted.
#[test]
fn only_keys_near_expiry_are_predicted() {
    let gated = |gate| {
        LearnedPredictor::new(LearnedConfig {
            gate: Gate::Secs(gate),
            ..small(100)
        })
    };
    let p = gated(3600);
    for _ in 0..50 {
        p.observe("hot-and-cached", T0 + 3600);
    }
    p.observe("expiring", T0);
    p.observe("expiring", T0 + 10);
    p.observe("expired-long-ago", T0 - 1000);
    p.observe("warmed-once-expiring-again", T0 + 3650 - 2 * 3600 + 30);
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    // At T0 + 3650: "expiring" was written at T0 (its value expires in under a minute).
    let top = p.predict(&tracker, T0 + 3650, Duration::from_secs(3600), 10);
    let keys: Vec<_> = top.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["expiring", "warmed-once-expiring-again"], "{top:?}");
    // A gate of 60 s: the hot key written 50 s ago is within the band.
    let p = gated(60);
    p.observe("hot-and-cached", T0 + 3600);
    p.observe("expiring", T0 + 3500);
    let top = p.predict(&tracker, T0 + 3650, Duration::from_secs(60), 1);
    assert_eq!(top[0].key, "hot-and-cached", "{top:?}");
}

#[test]
fn min_probability_filters() {
    let p = LearnedPredictor::new(LearnedConfig {
        min_probability: 0.99,
        ..small(100)
    });
    p.observe("once", T0);
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    assert!(
        p.predict(&tracker, T0 + 600, Duration::from_secs(60), 10)
            .is_empty()
    );
}

#[test]
fn falls_back_to_the_heuristic_before_any_access() {
    let p = LearnedPredictor::new(small(100));
    let tracker = AccessTracker::new(100, Duration::from_secs(900));
    tracker.record("a", T0);
    tracker.record("a", T0);
    tracker.record("b", T0);
    let top = p.predict(&tracker, T0 + 1, Duration::from_secs(3600), 5);
    let keys: Vec<_> = top.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    p.tick(T0 + 5); // nothing to train on: no panic
}

#[test]
fn memory_stays_bounded_under_many_distinct_keys() {
    let p = LearnedPredictor::new(small(2_000));
    for i in 0..200_000u64 {
        p.observe(&format!("distinct:{i}"), T0 + i / 100);
        if i % 500 == 0 {
            p.tick(T0 + i / 100);
        }
    }
    // A hot key survives the eviction sweeps.
    for i in 0..1000u64 {
        p.observe("hot", T0 + 2000 + i);
        p.observe(&format!("late:{i}"), T0 + 2000 + i);
    }
    assert!(p.len() <= 2_000, "{}", p.len());
    assert!(p.len() >= 1_500, "{}", p.len());
    assert!(p.features_of("hot", T0 + 3000, 60).is_some());
    let per_key = p.heap_bytes() / p.len();
    assert!(per_key < 200, "{per_key} bytes per key");
    assert!(p.prefix_bytes() <= 1 << 20);
    assert!(p.stats().pending <= LearnedConfig::default().max_pending);
}

#[test]
fn zero_keys_tracks_nothing() {
    let p = LearnedPredictor::new(small(0));
    p.observe("a", T0);
    assert!(p.is_empty());
}

/// The committed test model (`scripts/make-onnx-model.py`) is logistic
/// regression with the online model's prior weights: its scores must match
/// the built-in model's, and the predictor must rank with it.
#[cfg(feature = "onnx")]
#[test]
fn onnx_model_scores_like_the_built_in_prior() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/learned.onnx");
    let m = onnx::OnnxModel::load(&path).unwrap();
    let mut rows = vec![[0.0f32; features::NUM_FEATURES]; 3];
    rows[1][0] = 2.0;
    rows[1][4] = 1.0;
    for (i, v) in rows[2].iter_mut().enumerate() {
        *v = i as f32 * 0.25 - 1.0;
    }
    let mut out = Vec::new();
    m.score(&rows, &mut out).unwrap();
    let prior = Logistic::default();
    assert_eq!(out.len(), 3);
    for (x, s) in rows.iter().zip(&out) {
        assert!(
            (prior.probability(x) - s).abs() < 1e-5,
            "{s} vs {}",
            prior.probability(x)
        );
    }
    m.score(&[], &mut out).unwrap();
    assert!(out.is_empty());

    let p = LearnedPredictor::with_onnx(small(100), &path).unwrap();
    for _ in 0..5 {
        p.observe("busy", T0);
    }
    p.observe("quiet", T0);
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let top = p.predict(&tracker, T0 + 10, Duration::from_secs(60), 5);
    let keys: Vec<_> = top.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(keys, ["busy", "quiet"]);
    assert!(onnx::OnnxModel::load(std::path::Path::new("/nonexistent.onnx")).is_err());
}

/// With no explicit gate the gate is the service's TTL, and it follows a
/// run-time change of `default_ttl`: values written after the change are
/// modelled to live the new TTL, values cached before keep the one they
/// were written with (as in the cache).
#[test]
fn the_default_gate_follows_the_ttl() {
    let settings = crate::predict::PredictorSettings {
        default_ttl: Duration::from_secs(3600),
        seed: Some(1),
        ..Default::default()
    };
    let tracker = AccessTracker::new(1000, Duration::from_secs(900));
    let window = Duration::from_secs(300);
    let keys = |p: &LearnedPredictor, now: u64| -> Vec<String> {
        p.predict(&tracker, now, window, 10)
            .into_iter()
            .map(|x| x.key)
            .collect()
    };
    let p = LearnedPredictor::from_settings(&settings);
    p.observe("before", T0);
    tracker.record("before", T0);
    p.ttl_changed(Duration::from_secs(600));
    p.observe("after", T0 + 100);
    tracker.record("after", T0 + 100);
    assert!(keys(&p, T0 + 300).is_empty(), "nothing expires yet");
    assert_eq!(keys(&p, T0 + 700), ["after"], "written under the 600 s TTL");
    assert_eq!(keys(&p, T0 + 3600), ["before"], "written under 3600 s");
    // An explicit gate does not move.
    let fixed = LearnedPredictor::from_settings(&crate::predict::PredictorSettings {
        learned_idle_gate: Some(Duration::from_secs(3600)),
        ..settings
    });
    fixed.ttl_changed(Duration::from_secs(600));
    fixed.observe("after", T0 + 100);
    assert!(keys(&fixed, T0 + 700).is_empty());
    assert_eq!(keys(&fixed, T0 + 3700), ["after"]);
}

/// A write the service reports carries the value's own TTL (an origin's
/// `max-age`): the key is a candidate when that value expires, not one
/// default TTL later; a read-through write counts its read, a warm not.
#[test]
fn reported_writes_carry_their_own_ttl() {
    let p = LearnedPredictor::new(LearnedConfig {
        gate: Gate::Secs(3600),
        ..small(100)
    });
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let keys = |now: u64| -> Vec<String> {
        p.predict(&tracker, now, Duration::from_secs(300), 10)
            .into_iter()
            .map(|x| x.key)
            .collect()
    };
    p.observe("short", T0);
    p.written("short", T0, Duration::from_secs(300), Write::ReadThrough);
    p.observe("long", T0);
    p.written("long", T0, Duration::from_secs(7200), Write::ReadThrough);
    p.observe("default", T0);
    assert_eq!(keys(T0 + 300), ["short"]);
    assert_eq!(
        keys(T0 + 3600),
        ["default"],
        "short's value was not rewritten"
    );
    let mut at_7200 = keys(T0 + 7200);
    at_7200.sort();
    assert_eq!(
        at_7200,
        ["default", "long"],
        "default's would-be rewrite expires too"
    );
    let reads = |key: &str, now: u64| {
        let f = p.features_of(key, now, 3600).unwrap();
        (f[16].exp() - 1.0).round() as u32
    };
    assert_eq!(reads("short", T0 + 10), 1, "the read that wrote it");
    p.written("short", T0 + 400, Duration::from_secs(600), Write::Warm);
    assert_eq!(reads("short", T0 + 410), 0, "nobody read the warmed value");
    p.observe("short", T0 + 420);
    assert_eq!(keys(T0 + 1000), ["short"], "the warmed value's own TTL");
}

/// A warm nobody read is not followed by another: the key waits for a
/// read, however many expiries pass, so warming wastes at most one fetch
/// per read of a key.
#[test]
fn an_unread_warm_is_not_followed_by_another() {
    let p = LearnedPredictor::new(LearnedConfig {
        gate: Gate::Secs(600),
        ..small(100)
    });
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let keys = |now: u64| -> Vec<String> {
        p.predict(&tracker, now, Duration::from_secs(60), 10)
            .into_iter()
            .map(|x| x.key)
            .collect()
    };
    p.observe("k", T0);
    assert_eq!(keys(T0 + 600), ["k"], "its read-through value expires");
    p.written("k", T0 + 600, Duration::from_secs(600), Write::Warm);
    for expiry in 1..10 {
        assert!(
            keys(T0 + 600 + expiry * 600).is_empty(),
            "expiry {expiry} of an unread warm"
        );
    }
    // A read of the warmed value (cached, not expired) licenses the next warm.
    p.written("k", T0 + 6600, Duration::from_secs(600), Write::Warm);
    p.observe("k", T0 + 6700);
    assert_eq!(keys(T0 + 7200), ["k"]);
    // With the gate off every key is a candidate, read or not.
    let off = LearnedPredictor::new(small(100));
    off.observe("k", T0);
    off.written("k", T0 + 10, Duration::from_secs(600), Write::Warm);
    let top = off.predict(&tracker, T0 + 700, Duration::from_secs(60), 10);
    assert_eq!(top.len(), 1, "{top:?}");
}

/// `predict` names the keys whose value expires; `rank` (what replay's
/// prediction quality measures) ranks every key by the model, a key read
/// often and recently first, whatever its cached value's state.
#[test]
fn rank_scores_every_key_and_predict_only_the_expiring() {
    let p = LearnedPredictor::new(LearnedConfig {
        gate: Gate::Secs(3600),
        ..small(100)
    });
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let window = Duration::from_secs(300);
    p.observe("expiring", T0);
    for minute in 0..30 {
        p.observe("busy", T0 + 1800 + minute * 60);
    }
    p.written(
        "busy",
        T0 + 1800,
        Duration::from_secs(3600),
        Write::ReadThrough,
    );
    let keys = |v: Vec<Prediction>| v.into_iter().map(|x| x.key).collect::<Vec<_>>();
    let now = T0 + 3590;
    assert_eq!(keys(p.predict(&tracker, now, window, 10)), ["expiring"]);
    assert_eq!(
        keys(p.rank(&tracker, now, window, 10)),
        ["busy", "expiring"]
    );
    assert_eq!(keys(p.rank(&tracker, now, window, 1)), ["busy"]);
    // Other predictors rank as they predict.
    tracker.record("a", now);
    assert_eq!(
        HeuristicPredictor.rank(&tracker, now, window, 5),
        HeuristicPredictor.predict(&tracker, now, window, 5)
    );
}

/// The trained minimum applies once the model has trained on
/// `trained_after` labelled examples, not to the untrained prior.
#[test]
fn the_trained_minimum_waits_for_labels() {
    let p = LearnedPredictor::new(LearnedConfig {
        trained_min_probability: 0.99,
        trained_after: 5,
        sample_every_secs: 10,
        samples: 8,
        max_horizon_secs: 60,
        default_horizon_secs: 60,
        ..small(100)
    });
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let window = Duration::from_secs(60);
    for i in 0..20 {
        p.observe(&format!("k{i}"), T0);
    }
    assert_eq!(
        p.predict(&tracker, T0 + 1, window, 100).len(),
        20,
        "untrained: the prior's scores are not cut"
    );
    assert_eq!(p.status().trained, Some(false));
    // Snapshots every 10 s, labelled 60 s later.
    for t in (0..=200).step_by(10) {
        p.tick(T0 + t);
    }
    assert!(p.stats().examples >= 5, "{:?}", p.stats());
    let st = p.status();
    assert_eq!(
        (st.trained, st.examples),
        (Some(true), Some(p.stats().examples))
    );
    assert!(st.log_loss.is_some_and(f64::is_finite), "{st:?}");
    assert!(
        p.predict(&tracker, T0 + 201, window, 100).is_empty(),
        "trained: keys under 0.99 are cut"
    );
}

/// A key read every minute stays cached, but its value (written at the
/// first read, a miss) still expires one TTL later: it is a candidate then,
/// whatever its recent reads. Once the service reports a warm, the key
/// waits for the warmed value to near expiry.
#[test]
fn keys_read_often_are_candidates_when_their_value_expires() {
    let p = LearnedPredictor::new(LearnedConfig {
        gate: Gate::Secs(3600),
        ..small(100)
    });
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let window = Duration::from_secs(300);
    for minute in 0..60 {
        p.observe("busy", T0 + minute * 60);
    }
    p.observe("read-once", T0 + 1800);
    let keys = |now: u64| -> Vec<String> {
        p.predict(&tracker, now, window, 10)
            .into_iter()
            .map(|x| x.key)
            .collect()
    };
    assert!(keys(T0 + 3000).is_empty(), "no value expires yet");
    assert_eq!(keys(T0 + 3590), ["busy"], "written at T0, read since");
    // Warmed at T0 + 3595: fresh until T0 + 7195, so not a candidate at
    // T0 + 5400 (when "read-once", written at T0 + 1800, expires).
    p.written("busy", T0 + 3595, Duration::from_secs(3600), Write::Warm);
    p.observe("busy", T0 + 3700);
    assert_eq!(keys(T0 + 5400), ["read-once"]);
    assert_eq!(keys(T0 + 7190), ["busy"]);
    // A warm of a key the predictor never saw is ignored.
    p.written("unknown", T0 + 7190, Duration::from_secs(3600), Write::Warm);
    assert_eq!(p.len(), 2);
}

/// Waiting examples fit in `max_pending` whatever the horizon: 256 per
/// 30 s round for an hour (120 rounds, 30,720 waiting), fewer for a day.
#[test]
fn snapshots_per_round_fit_the_pending_cap() {
    let cfg = LearnedConfig::default();
    assert_eq!(super::per_snapshot(&cfg, 3600).min(cfg.samples), 256);
    let day = super::per_snapshot(&cfg, 86_400);
    assert_eq!(day, 200_000 / 2880);
    assert!(day * 2880 <= cfg.max_pending);
    let tiny = LearnedConfig {
        max_pending: 10,
        ..LearnedConfig::default()
    };
    assert_eq!(super::per_snapshot(&tiny, 86_400), 1);
}

/// Training samples candidates uniformly however sparse they are: with
/// 20,000 keys tracked and 10 whose value expires now, the snapshots of
/// their band take all 10, each once or more (random draws alone would
/// find one about every other snapshot, and the model would stay
/// untrained for many TTLs).
#[test]
fn sparse_candidates_are_all_snapshotted() {
    let p = LearnedPredictor::new(LearnedConfig {
        gate: Gate::Secs(3600),
        sample_every_secs: 30,
        ..small(1 << 16)
    });
    for i in 0..20_000 {
        p.observe(&format!("old:{i}"), T0);
    }
    for i in 0..10 {
        p.observe(&format!("late:{i}"), T0 + 1000);
    }
    // The late keys' values expire at T0 + 4600; the old keys' at T0 + 3600
    // (and, rewritten, at T0 + 7200): within 60 s of T0 + 4600 (the band is
    // 120 s) only the late keys are candidates. Snapshots every 30 s.
    for t in [4540, 4570, 4600, 4630] {
        p.tick(T0 + t);
    }
    let taken = p.stats().pending;
    assert!((10..=40).contains(&taken), "{taken} snapshots");
    let snapshotted: std::collections::HashSet<u64> =
        p.trainer.lock().pending.iter().map(|x| x.hash).collect();
    for i in 0..10 {
        let h = p.hasher.hash_one(format!("late:{i}").as_str());
        assert!(snapshotted.contains(&h), "late:{i} never snapshotted");
    }
    assert_eq!(snapshotted.len(), 10, "only the late keys");
    // An hour later they are labelled, and the one read since is a positive
    // (in each snapshot of it).
    p.observe("late:3", T0 + 5000);
    p.tick(T0 + 4630 + 3600);
    let s = p.stats();
    assert_eq!(s.examples, taken as u64, "{s:?}");
    assert!((1..=4).contains(&s.positives), "{s:?}");
}

/// Equal scores are ordered by key, whatever the order the keys are
/// stored in, and the `limit` best are the same keys a full sort would
/// keep: 60 keys with the same history score alike, 10 more score higher.
#[test]
fn top_orders_ties_by_key_and_keeps_the_best() {
    let p = LearnedPredictor::new(small(1000));
    let tracker = AccessTracker::new(10, Duration::from_secs(900));
    let window = Duration::from_secs(300);
    for i in (0..60).rev() {
        p.observe(&format!("tie:{i:02}"), T0);
    }
    for i in 0..10 {
        for t in 0..5 {
            p.observe(&format!("hot:{i}"), T0 + 60 * t);
        }
    }
    let now = T0 + 300;
    let got: Vec<(String, f64)> = p
        .rank(&tracker, now, window, 15)
        .into_iter()
        .map(|x| (x.key, x.score))
        .collect();
    assert_eq!(got.len(), 15);
    assert!(
        got[..10].iter().all(|(k, _)| k.starts_with("hot:")),
        "{got:?}"
    );
    assert!(
        got.windows(2).all(|w| w[0].1 >= w[1].1),
        "best first: {got:?}"
    );
    let ties: Vec<&str> = got[10..].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ties, ["tie:00", "tie:01", "tie:02", "tie:03", "tie:04"]);
    // Asking for every key gives the same order as sorting them all.
    let all = p.rank(&tracker, now, window, 1000);
    assert_eq!(all.len(), 70);
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
    assert_eq!(all, sorted);
    assert_eq!(
        all[..15].iter().map(|x| &x.key).collect::<Vec<_>>(),
        got.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
}

proptest::proptest! {
    /// Keys whose 8-byte leads differ order as their leads do, so that
    /// `top_each` may compare leads before keys.
    #[test]
    fn key_leads_order_as_keys(a in "[\\x00-\\x03a-c\u{e9}]{0,11}", b in "[\\x00-\\x03a-c\u{e9}]{0,11}") {
        let (la, lb) = (super::key_lead(&a), super::key_lead(&b));
        if la != lb {
            proptest::prop_assert_eq!(la.cmp(&lb), a.cmp(&b), "{:?} {:?}", a, b);
        }
    }
}

#[test]
fn ranks_order_as_scores_then_keys_and_give_the_score_back() {
    let scores = [
        f32::NEG_INFINITY,
        -3.5,
        -0.0,
        0.0,
        1e-30,
        0.25,
        0.5,
        0.999,
        1.0,
        7.0,
        f32::INFINITY,
    ];
    for w in scores.windows(2) {
        assert!(
            super::total_order_bits(w[0]) < super::total_order_bits(w[1]),
            "{w:?}"
        );
    }
    let e = |key: &str| Entry {
        key: key.into(),
        hash: 0,
        prefix_hash: 0,
        state: KeyState::new(0, T0, 0),
    };
    let (a, b) = (e("user:1"), e("user:2"));
    for &x in &scores {
        let s = Scored::new(x, 0, 0, &a);
        assert_eq!(s.score().to_bits(), x.to_bits());
        // A higher score ranks first, whatever the key.
        if x.is_finite() && x.abs() > 1e-3 {
            let lower = x - x.abs() / 2.0;
            assert!(Scored::new(x, 0, 0, &b).rank < Scored::new(lower, 0, 0, &a).rank);
        }
        // An equal score ranks by key.
        assert!(s.rank < Scored::new(x, 0, 0, &b).rank);
    }
    assert_eq!(Scored::new(f32::NAN, 0, 0, &a).score(), 0.0);
}

//! Offline evaluation of the predictors on a trace: how well the top-K keys
//! each predictor names at time `t` cover the requests of `(t, t + window]`.
//!
//! ```text
//! cargo run --release --example eval_predictor -- TRACE [FORMAT] [K] [WINDOW_S] [EVERY_S] [RATE]
//! ```
//! - `TRACE`: `cloudPhysicsIO.csv` (format `csv`: `version,time,op,size,lbn`,
//!   time in seconds, key = lbn) or a decompressed cache2k trace such as
//!   `web07.trace` (`xz -dk web07.trace.xz`; format `i32be`: one big-endian
//!   `i32` key per request, no time: requests are spread at `RATE` per second).
//! - `K` keys predicted (default 100), `WINDOW_S` the window (default 600),
//!   `EVERY_S` seconds between two predictions (default 60), `RATE` (default 20).
//!
//! Every access goes to the tracker and to each predictor's `observe`;
//! `tick` runs every 5 virtual seconds, as in the service. At every
//! prediction it prints nothing; at the end, per predictor:
//! - `recall`: requests in the window whose key was predicted / all requests
//!   in the window (request-weighted),
//! - `recall_seen_miss`: the same over the requests that would miss a TTL
//!   cache (TTL = window) without warming although the key was seen before
//!   (previous access more than `window` earlier): the ones warming can save,
//! - `precision`: predicted keys requested in the window / predicted keys,
//!
//! and the time spent in observe + tick + predict (accesses per second).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use warming::access::AccessTracker;
use warming::predict;

fn load(path: &str, format: &str, rate: f64) -> Vec<(u64, String)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match format {
        "csv" => BufReader::new(file)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let l = l.ok()?;
                let f: Vec<&str> = l.split(',').collect();
                Some((f.get(1)?.parse().ok()?, f.get(4)?.trim().to_string()))
            })
            .collect(),
        "i32be" => {
            let mut bytes = Vec::new();
            BufReader::new(file).read_to_end(&mut bytes).unwrap();
            let start = 1_700_000_000.0;
            bytes
                .chunks_exact(4)
                .enumerate()
                .map(|(i, c)| {
                    let k = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                    ((start + i as f64 / rate) as u64, k.to_string())
                })
                .collect()
        }
        f => panic!("unknown format {f}"),
    }
}

#[derive(Default)]
struct Score {
    hits: u64,
    reqs: u64,
    miss_hits: u64,
    miss_reqs: u64,
    useful: u64,
    predicted: u64,
    time: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: eval_predictor TRACE [FORMAT] [K] [WINDOW_S] [EVERY_S] [RATE]");
    let format = args.get(2).map_or("csv", String::as_str);
    let k: usize = args.get(3).map_or(100, |s| s.parse().unwrap());
    let window: u64 = args.get(4).map_or(600, |s| s.parse().unwrap());
    let every: u64 = args.get(5).map_or(60, |s| s.parse().unwrap());
    let rate: f64 = args.get(6).map_or(20.0, |s| s.parse().unwrap());
    let events = load(path, format, rate);
    // Would a request miss a TTL (= window) cache although its key was seen?
    let mut last: HashMap<&str, u64> = HashMap::new();
    let seen_miss: Vec<bool> = events
        .iter()
        .map(|(t, key)| {
            let m = last.get(key.as_str()).is_some_and(|&p| t - p > window);
            last.insert(key, *t);
            m
        })
        .collect();
    let names = ["heuristic", "frequency", "learned"];
    let learned = std::sync::Arc::new(predict::LearnedPredictor::from_settings(
        &predict::PredictorSettings::default(),
    ));
    let preds: Vec<std::sync::Arc<dyn predict::Predictor>> = names
        .iter()
        .map(|&n| match n {
            "learned" => learned.clone() as std::sync::Arc<dyn predict::Predictor>,
            n => predict::by_name(n).unwrap(),
        })
        .collect();
    let mut scores: Vec<Score> = names.iter().map(|_| Score::default()).collect();
    let tracker = AccessTracker::new(1_000_000, Duration::from_secs(900));
    let t0 = events[0].0;
    let (mut next_tick, mut next_eval) = (t0, t0 + every);
    let started = Instant::now();
    for (i, (t, key)) in events.iter().enumerate() {
        while *t >= next_tick {
            for (p, s) in preds.iter().zip(&mut scores) {
                let c = Instant::now();
                p.tick(next_tick);
                s.time += c.elapsed();
            }
            next_tick += 5;
        }
        if *t >= next_eval {
            let now = next_eval;
            next_eval += every;
            for (p, s) in preds.iter().zip(&mut scores) {
                let c = Instant::now();
                let top = p.predict(&tracker, now, Duration::from_secs(window), k);
                s.time += c.elapsed();
                let set: std::collections::HashSet<&str> =
                    top.iter().map(|x| x.key.as_str()).collect();
                let mut touched = std::collections::HashSet::new();
                for (j, (tj, kj)) in events[i..].iter().enumerate() {
                    if *tj > now + window {
                        break;
                    }
                    let hit = set.contains(kj.as_str());
                    s.reqs += 1;
                    s.hits += u64::from(hit);
                    if seen_miss[i + j] {
                        s.miss_reqs += 1;
                        s.miss_hits += u64::from(hit);
                    }
                    if hit {
                        touched.insert(kj.as_str());
                    }
                }
                s.useful += touched.len() as u64;
                s.predicted += top.len() as u64;
            }
        }
        tracker.record(key, *t);
        for (p, s) in preds.iter().zip(&mut scores) {
            let c = Instant::now();
            p.observe(key, *t);
            s.time += c.elapsed();
        }
    }
    println!(
        "{path}: {} requests, K={k} window={window}s every={every}s ({:.1}s)",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    println!("predictor   recall  recall_seen_miss  precision  accesses/s (observe+tick+predict)");
    for (n, s) in names.iter().zip(&scores) {
        println!(
            "{n:<10} {:>7.4} {:>17.4} {:>10.4} {:>12.0}",
            s.hits as f64 / s.reqs.max(1) as f64,
            s.miss_hits as f64 / s.miss_reqs.max(1) as f64,
            s.useful as f64 / s.predicted.max(1) as f64,
            events.len() as f64 / s.time.as_secs_f64()
        );
    }
    let st = learned.stats();
    println!(
        "learned: {} keys, {} examples ({} positive), running log-loss {:.4}",
        st.keys, st.examples, st.positives, st.running_loss
    );
    for (n, w) in predict::learned::features::FEATURE_NAMES
        .iter()
        .zip(&st.weights)
    {
        println!("  {n:<16} {w:>8.4}");
    }
    println!("  bias             {:>8.4}", st.bias);
}

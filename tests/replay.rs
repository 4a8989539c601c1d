//! Replay: the trace parsers on slices of the real shared traces, a whole
//! replay run on a slice, and the proof that replay's predictive warming
//! chooses the keys the live service chooses for the same history.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::server::{TestServer, settings};
use warming::access::AccessTracker;
use warming::predict::by_name;
use warming::replay::modes::predictive::choose_keys;
use warming::replay::trace::{self, Clock, Format, Request};
use warming::replay::{self as replay, ReplayConfig, Writes, modes, sim};

/// `../shared/traces` beside the checkout, or `WARMING_TRACES`.
fn traces() -> PathBuf {
    std::env::var_os("WARMING_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"))
}

fn clock() -> Clock {
    Clock {
        start: 0.0,
        rate: 10.0,
    }
}

fn head(file: &str, format: Format, n: usize) -> Vec<Request> {
    trace::open(&traces().join(file), format, clock())
        .unwrap()
        .take(n)
        .collect::<std::io::Result<Vec<_>>>()
        .unwrap()
}

/// The first `n` requests of cloudPhysicsIO.csv, streamed as replay reads them.
fn cloudphysics(n: usize) -> impl Iterator<Item = std::io::Result<Request>> {
    trace::open(
        &traces().join("cloudPhysicsIO.csv"),
        Format::CloudPhysics,
        clock(),
    )
    .unwrap()
    .take(n)
}

/// Every request of the trace at `path`, read as `format`.
fn read_all(path: &Path, format: Format) -> Vec<Request> {
    trace::open(path, format, clock())
        .unwrap()
        .collect::<std::io::Result<_>>()
        .unwrap()
}

/// First data rows of cloudPhysicsIO.csv (after the header), e.g.
/// `1,5633898,2a,512,42932745`: time in s, op hex (2a = write), size, lbn.
#[test]
fn cloudphysics_csv_slice() {
    let path = traces().join("cloudPhysicsIO.csv");
    assert_eq!(Format::detect(&path).unwrap(), Format::CloudPhysics);
    let r = head("cloudPhysicsIO.csv", Format::CloudPhysics, 20_000);
    assert_eq!(r.len(), 20_000);
    assert_eq!(r[0].at, 5_633_898.0, "first timestamp per the README");
    assert_eq!((r[0].id, r[0].size, r[0].write), (42_932_745, 512, true));
    assert!(r.windows(2).all(|w| w[0].at <= w[1].at));
    assert!(r.iter().all(|q| q.size >= 1 && q.key == q.id.to_string()));
    assert!(r.iter().any(|q| q.write) && r.iter().any(|q| !q.write));
}

/// The vscsi file is row for row the CSV, with µs timestamps.
#[test]
fn vscsi_matches_the_csv_row_for_row() {
    let path = traces().join("cloudPhysicsIO.vscsi");
    assert_eq!(Format::detect(&path).unwrap(), Format::Vscsi);
    let v = head("cloudPhysicsIO.vscsi", Format::Vscsi, 2000);
    let c = head("cloudPhysicsIO.csv", Format::CloudPhysics, 2000);
    for (a, b) in v.iter().zip(&c) {
        assert_eq!(a.at.floor(), b.at);
        assert_eq!((a.id, a.size, a.write), (b.id, b.size, b.write));
    }
}

/// web07: 76,118 big-endian i32 keys, xz-compressed; time from `--rate`.
#[test]
fn web07_xz_whole_file() {
    let path = traces().join("web07.trace.xz");
    assert_eq!(Format::detect(&path).unwrap(), Format::Cache2k);
    let r = read_all(&path, Format::Cache2k);
    assert_eq!(r.len(), 76_118, "request count per the README");
    let distinct: std::collections::HashSet<u64> = r.iter().map(|q| q.id).collect();
    assert_eq!(distinct.len(), 20_484, "distinct keys per the README");
    assert_eq!(r[10].at, 1.0, "10 requests per second");
}

/// libCacheSim's oracleGeneral records of the first cloudPhysicsIO rows
/// (`u32 time, u64 id, u32 size, i64 next`, little-endian), plain, as one
/// zstd frame and as two concatenated frames: all three read back as the
/// CSV's time, key and size, and the names are recognised. The second
/// zstd file also holds a skippable frame.
#[test]
fn oracle_general_plain_and_zstd_match_the_csv() {
    let csv = head("cloudPhysicsIO.csv", Format::CloudPhysics, 5_000);
    let mut bin = Vec::with_capacity(csv.len() * 24);
    for r in &csv {
        bin.extend_from_slice(&(r.at as u32).to_le_bytes());
        bin.extend_from_slice(&r.id.to_le_bytes());
        bin.extend_from_slice(&r.size.to_le_bytes());
        bin.extend_from_slice(&(-1i64).to_le_bytes());
    }
    let level = ruzstd::encoding::CompressionLevel::Fastest;
    let one_frame = ruzstd::encoding::compress_to_vec(&bin[..], level);
    let (a, b) = bin.split_at(24 * 2_000);
    let mut two_frames = ruzstd::encoding::compress_to_vec(a, level);
    // A skippable frame between them (magic 0x184D2A5?, length, payload), as pzstd writes.
    two_frames.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
    two_frames.extend_from_slice(&5u32.to_le_bytes());
    two_frames.extend_from_slice(b"skip!");
    two_frames.extend(ruzstd::encoding::compress_to_vec(b, level));
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("cloud.oracleGeneral.bin", &bin),
        ("cloud.oracleGeneral.zst", &one_frame),
        ("cloud.oracleGeneral.sample.zst", &two_frames),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(
            Format::detect(&path).unwrap(),
            Format::OracleGeneral,
            "{name}"
        );
        let got = read_all(&path, Format::OracleGeneral);
        assert_eq!(got.len(), csv.len(), "{name}");
        for (g, c) in got.iter().zip(&csv) {
            assert_eq!(
                (g.at, g.id, &g.key, g.size),
                (c.at, c.id, &c.key, c.size),
                "{name}"
            );
        }
    }
    // A record cut short is an error, not a silent end.
    let cut = dir.path().join("cut.oracleGeneral.bin");
    std::fs::write(&cut, &bin[..24 * 3 + 10]).unwrap();
    let r: Vec<_> = trace::open(&cut, Format::OracleGeneral, clock())
        .unwrap()
        .collect();
    assert_eq!(r.len(), 4);
    assert!(r[3].is_err());
}

/// One key per line (libCacheSim's `.txt`, caffeine's text `.trace`): the
/// keys of web07 written as text read back in order with the clock's
/// times; a `.trace` file is told apart from the binary one by its bytes.
#[test]
fn text_traces_one_key_per_line() {
    let web = head("web07.trace.xz", Format::Cache2k, 3_000);
    let mut text = String::from("# web07, first requests\n\n");
    for r in &web {
        text.push_str(&r.key);
        text.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["web07.txt", "web07.trace", "web07.txt.zst"] {
        let path = dir.path().join(name);
        let bytes = if name.ends_with(".zst") {
            ruzstd::encoding::compress_to_vec(
                text.as_bytes(),
                ruzstd::encoding::CompressionLevel::Fastest,
            )
        } else {
            text.clone().into_bytes()
        };
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(Format::detect(&path).unwrap(), Format::Text, "{name}");
        let got = read_all(&path, Format::Text);
        assert_eq!(got.len(), web.len(), "{name}");
        for (g, w) in got.iter().zip(&web) {
            assert_eq!((g.at, &g.key), (w.at, &w.key), "{name}");
            assert_eq!(Some(g.id), Format::Text.key_space().id(&g.key));
        }
    }
    assert_eq!(
        Format::detect(&traces().join("web07.trace.xz")).unwrap(),
        Format::Cache2k,
        "the binary .trace stays cache2k"
    );
}

fn config(modes: &str, ttl: f64) -> ReplayConfig {
    let sim = sim::SimConfig {
        capacity: sim::Capacity::Entries(100_000),
        ttl,
        latency: 0.1,
        rps: 100.0,
        admission: false,
        max_remembered: usize::MAX,
    };
    ReplayConfig {
        modes: modes::parse_list(modes),
        mode: modes::ModeConfig::new(sim, Format::CloudPhysics.key_space()),
        writes: Writes::Access,
        max_buffered: replay::MAX_BUFFERED,
    }
}

/// The oracles' look-ahead buffer holds at most `max_buffered` requests:
/// on a trace too busy for its lead the oracles look less far ahead (and
/// say so), still bound the other modes, and every request is replayed.
#[test]
fn the_look_ahead_buffer_is_capped() {
    let slice = || cloudphysics(20_000);
    let full = replay::run(
        slice(),
        "slice",
        "cloudphysics",
        &config("none,oracle", 600.0),
    )
    .unwrap();
    let capped_cfg = ReplayConfig {
        max_buffered: 50,
        ..config("none,oracle", 600.0)
    };
    let capped = replay::run(slice(), "slice", "cloudphysics", &capped_cfg).unwrap();
    let (none, oracle) = (&capped.modes[0].1, &capped.modes[1].1);
    let stats = |m: &modes::ModeResult| m.stats.clone().unwrap();
    assert_eq!(stats(oracle).requests, 20_000);
    assert!(stats(oracle).hits >= stats(none).hits);
    assert!(
        stats(oracle).hits <= stats(&full.modes[1].1).hits,
        "less look-ahead, no better"
    );
    let note = oracle.note.clone().unwrap_or_default();
    assert!(note.contains("50 requests buffered at most"), "{note:?}");
    assert!(
        none.note.is_none(),
        "modes that do not look ahead say nothing"
    );
    assert!(full.modes[1].1.note.is_none(), "{:?}", full.modes[1].1.note);
}

/// The learned mode repeats exactly for one seed (its hashing and sampling
/// are seeded), so a replay's figures can be compared across runs.
#[test]
fn learned_replay_repeats_for_a_seed() {
    let run = || {
        let input = cloudphysics(30_000);
        let cfg = config("learned", 300.0);
        let r = replay::run(input, "slice", "cloudphysics", &cfg).unwrap();
        r.modes[0].1.stats.clone().unwrap()
    };
    let first = run();
    assert!(first.origin_fetches_warming > 0, "{first:?}");
    assert_eq!(first, run());
}

/// A replay of the first 20,000 requests through every mode: the figures
/// add up, the oracle bounds everything, an unknown predictor is
/// "unavailable", and the JSON has the fields.
#[test]
fn replay_of_a_slice_is_consistent() {
    let input = cloudphysics(20_000);
    let cfg = config(
        "none,refresh-ahead,xfetch,heuristic,predictor:frequency,predictor:nope,oracle,oracle-seen",
        300.0,
    );
    let r = replay::run(input, "slice", "cloudphysics", &cfg).unwrap();
    let get = |name: &str| {
        r.modes
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .stats
            .clone()
    };
    let none = get("none").unwrap();
    for (name, m) in &r.modes {
        let Some(s) = &m.stats else {
            assert_eq!(name, "predictor:nope");
            assert_eq!(m.status, "unavailable");
            continue;
        };
        assert_eq!(s.requests, 20_000, "{name}");
        assert_eq!(s.hits + s.misses, s.requests, "{name}");
        assert_eq!(s.misses_cold, none.misses_cold.min(s.misses_cold), "{name}");
    }
    let oracle = get("oracle").unwrap();
    let seen = get("oracle-seen").unwrap();
    assert!(oracle.hits >= seen.hits && seen.hits >= none.hits);
    assert_eq!(
        seen.misses_cold, none.misses_cold,
        "no history predicts a new key"
    );
    assert!(get("heuristic").unwrap().origin_fetches_warming > 0);
    let j = replay::report::json(&r);
    for field in support::REPLAY_FIELDS {
        assert!(j["modes"]["none"].get(field).is_some(), "{field}");
    }
    assert!(j["modes"]["heuristic"]["quality"].is_array());
    assert!(replay::report::table(&r).contains("oracle-seen"));
}

/// Same history, same moment: the live service's `POST
/// /warm/trigger-predictive` queues exactly the keys (and order) replay's
/// heuristic mode chooses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_heuristic_chooses_the_live_services_keys() {
    let origin = TestOrigin::start().await;
    let s = settings(&origin.url_template());
    let bucket = s.service.tracker_bucket;
    let max_keys = s.service.tracker_max_keys;
    // What replay's predictor modes use when a schedule names no strategy.
    let replay_defaults = warming::replay::modes::predictive::PredictiveConfig::default();
    assert_eq!(
        replay_defaults.default_strategy,
        s.tunables.default_strategy
    );
    assert_eq!(replay_defaults.predict_window, s.tunables.predict_window);
    let server = TestServer::start(s).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Distinct counts and recencies, so the order cannot tie.
    let mut events = Vec::new();
    for k in 0..40u64 {
        for j in 0..(k % 7 + 1) {
            let at = now - 60 * (k % 5) - 3000 * (j % 2) - 7 * k;
            events.push((format!("item:{k}"), at));
        }
    }
    let body: Vec<Value> = events
        .iter()
        .map(|(k, at)| json!({"key": k, "at": *at as f64}))
        .collect();
    let (st, _) = server.post("/warm/access", json!({"events": body})).await;
    assert!(st.is_success());
    let (st, resp) = server
        .post("/warm/trigger-predictive", json!({"limit": 15}))
        .await;
    assert!(st.is_success(), "{resp}");
    let live: Vec<String> = serde_json::from_value(resp["keys"].clone()).unwrap();

    let tracker = AccessTracker::new(max_keys, bucket);
    for (k, at) in &events {
        tracker.record(k, *at);
    }
    let predictor = by_name("heuristic").unwrap();
    let chosen = choose_keys(
        &*predictor,
        &tracker,
        now,
        replay_defaults.predict_window,
        15,
        replay_defaults.default_strategy,
        50,
        100.0,
    );
    let ours: Vec<String> = chosen.into_iter().map(|p| p.key).collect();
    assert_eq!(ours.len(), 15);
    assert_eq!(live, ours);
    server.shutdown().await;
}

/// `--no-quality`: the predictor modes replay exactly as with the quality
/// figures (ranking is read-only), and no quality table or rows come out.
#[test]
fn replay_without_quality_figures_replays_the_same() {
    let run = |quality: bool| {
        let input = cloudphysics(20_000);
        let mut cfg = config("heuristic,learned", 300.0);
        if !quality {
            cfg.mode.predictive.quality_ks.clear();
        }
        replay::run(input, "slice", "cloudphysics", &cfg).unwrap()
    };
    let (with, without) = (run(true), run(false));
    for ((name, a), (_, b)) in with.modes.iter().zip(&without.modes) {
        assert_eq!(a.stats, b.stats, "{name}");
        assert!(a.quality.as_ref().is_some_and(|q| !q.is_empty()), "{name}");
        assert!(b.quality.is_none(), "{name}");
    }
    assert!(replay::report::table(&with).contains("prediction quality"));
    assert!(!replay::report::table(&without).contains("prediction quality"));
    let j = replay::report::json(&without);
    assert_eq!(j["settings"]["quality_k"], serde_json::json!([]));
}

//! Replay throughput: requests per second through one mode, on the
//! cloudPhysicsIO trace loaded in memory (so parsing is not measured).
//! Targets (issue 3): `none` >= 2 M req/s, `learned` >= 500 k req/s, one core.
//! The predictor modes run twice: with the prediction-quality figures
//! (`warming replay`'s default), and without (`--no-quality`, `*-no-quality`).
//!
//! `cargo bench --bench replay` (`WARMING_TRACES` overrides `../shared/traces`).

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use warming::replay::trace::{self, Clock, Format, Request};
use warming::replay::{self as replay, ReplayConfig, Writes, modes, sim};

/// The allocator of the `warming` binary, so that the figures are those of
/// `warming replay`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn requests() -> Vec<Request> {
    let dir = std::env::var_os("WARMING_TRACES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces"));
    let clock = Clock {
        start: 0.0,
        rate: 10.0,
    };
    trace::open(&dir.join("cloudPhysicsIO.csv"), Format::CloudPhysics, clock)
        .expect("trace")
        .collect::<std::io::Result<_>>()
        .expect("trace parses")
}

fn config(mode: &str, quality: bool) -> ReplayConfig {
    let sim = sim::SimConfig {
        capacity: sim::Capacity::Entries(1_000_000),
        ttl: 3600.0,
        latency: 0.1,
        rps: 100.0,
        admission: false,
        max_remembered: usize::MAX,
    };
    let mut mode_cfg = modes::ModeConfig::new(sim, Format::CloudPhysics.key_space());
    if !quality {
        mode_cfg.predictive.quality_ks.clear();
    }
    ReplayConfig {
        modes: vec![mode.to_string()],
        mode: mode_cfg,
        writes: Writes::Access,
        max_buffered: warming::replay::MAX_BUFFERED,
    }
}

fn bench(c: &mut Criterion) {
    let reqs = requests();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.sample_size(10);
    // `warming replay`'s defaults (the predictor modes with the prediction
    // quality figures), then the predictor modes with `--no-quality`.
    let runs = [
        ("none", true),
        ("refresh-ahead", true),
        ("oracle", true),
        ("heuristic", true),
        ("learned", true),
        ("heuristic", false),
        ("learned", false),
    ];
    for (mode, quality) in runs {
        let cfg = config(mode, quality);
        if modes::build(mode, &cfg.mode).ok().flatten().is_none() {
            eprintln!("replay/{mode}: unavailable, skipped");
            continue;
        }
        let name = if quality {
            mode.to_string()
        } else {
            format!("{mode}-no-quality")
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = replay::run(reqs.iter().cloned().map(Ok), "bench", "cloudphysics", &cfg)
                    .expect("replay");
                std::hint::black_box(r.requests)
            })
        });
    }
    g.finish();
}

// Criterion's own plots would need a registered font (plotters is built
// with `ab_glyph` for the replay chart): the figures are printed instead.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);

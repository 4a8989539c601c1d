//! The replay's outputs as text (a table per mode, a table of prediction
//! quality) and as JSON (`{"trace": ..., "modes": {"none": {...}, ...}}`).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::Report;

/// The comparison table and the quality table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let span = r.last_at - r.first_at;
    let _ = writeln!(
        out,
        "trace {} ({}): {} requests over {:.0} s{}; cache {:?}, TTL {} s, origin {} ms, budget {} rps; replayed in {:.2} s ({:.0} req/s per mode set)",
        r.trace,
        r.format,
        r.requests,
        span,
        if r.writes_skipped > 0 {
            format!(", {} writes skipped", r.writes_skipped)
        } else {
            String::new()
        },
        r.config.sim.capacity,
        r.config.sim.ttl,
        r.config.sim.latency * 1000.0,
        if r.config.sim.rps > 0.0 {
            format!("{}", r.config.sim.rps)
        } else {
            "unlimited".into()
        },
        r.elapsed_secs,
        r.requests as f64 / r.elapsed_secs.max(1e-9),
    );
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6} {:>9}",
        "mode",
        "requests",
        "hit%",
        "cold",
        "expired",
        "evicted",
        "inflight",
        "demand",
        "warming",
        "wasted",
        "fetch/hit",
        "peak/s",
        "stampedes"
    );
    for (name, m) in &r.modes {
        match &m.stats {
            Some(s) => {
                let _ = writeln!(
                    out,
                    "{:<14} {:>9} {:>7.2} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8.3} {:>6} {:>9}",
                    name,
                    s.requests,
                    s.hit_ratio * 100.0,
                    s.misses_cold,
                    s.misses_expired,
                    s.misses_evicted,
                    s.misses_in_flight,
                    s.origin_fetches_demand,
                    s.origin_fetches_warming,
                    s.wasted_warms,
                    s.origin_fetches_per_hit,
                    s.peak_origin_rps,
                    s.stampedes
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<14} {} ({})",
                    name,
                    m.status,
                    m.note.as_deref().unwrap_or("")
                );
            }
        }
    }
    for (name, m) in &r.modes {
        if let (Some(_), Some(note)) = (&m.stats, &m.note) {
            let _ = writeln!(out, "note ({name}): {note}");
        }
    }
    let with_quality: Vec<_> = r
        .modes
        .iter()
        .filter_map(|(n, m)| m.quality.as_ref().map(|q| (n, q)))
        .collect();
    if !with_quality.is_empty() {
        let _ = writeln!(
            out,
            "\nprediction quality (top-K vs the next {} s window; request-weighted):",
            r.config.predictive.quality_window
        );
        let _ = writeln!(
            out,
            "{:<14} {:>6} {:>10} {:>8} {:>9} {:>8}",
            "predictor", "K", "precision", "recall", "key-prec", "windows"
        );
        for (name, rows) in with_quality {
            for q in rows {
                let _ = writeln!(
                    out,
                    "{:<14} {:>6} {:>10.3} {:>8.3} {:>9.3} {:>8}",
                    name, q.k, q.precision, q.recall, q.key_precision, q.windows
                );
            }
        }
    }
    out
}

/// The report as JSON.
pub fn json(r: &Report) -> Value {
    let mut modes = Map::new();
    for (name, m) in &r.modes {
        modes.insert(name.clone(), serde_json::to_value(m).unwrap_or(Value::Null));
    }
    let c = &r.config;
    json!({
        "trace": r.trace,
        "format": r.format,
        "requests": r.requests,
        "writes_skipped": r.writes_skipped,
        "span_secs": r.last_at - r.first_at,
        "elapsed_secs": r.elapsed_secs,
        "settings": {
            "cache_size": format!("{:?}", c.sim.capacity),
            "ttl_secs": c.sim.ttl,
            "origin_latency_ms": c.sim.latency * 1000.0,
            "origin_rps": c.sim.rps,
            "refresh_fraction": c.refresh_fraction,
            "xfetch_beta": c.xfetch_beta,
            "oracle_lead_secs": c.oracle_lead,
            "warm_limit": c.predictive.warm_limit,
            "schedules": c.predictive.schedules,
            "tracker_max_keys": c.predictive.tracker_max_keys,
            "quality_window_secs": c.predictive.quality_window,
            "quality_k": c.predictive.quality_ks,
        },
        "modes": modes,
    })
}

//! Trace replay: what would warming have done on this traffic?
//!
//! `warming replay --trace FILE` reads an access trace ([`trace`]) and
//! replays it in virtual time, as fast as the CPU allows, through several
//! warming modes at once ([`modes`]). Each mode has its own simulated cache
//! and origin ([`sim`]); the predictor modes use the service's own tracker,
//! predictors, strategies and schedules. The result ([`Report`]) is a table
//! ([`report`]), JSON, a PNG chart ([`chart`]) and prediction quality figures
//! ([`quality`]). `docs/replay.md` is the user's guide.
//!
//! # Streaming
//!
//! The trace is read once, request by request, and every mode sees each
//! request before the next is read. Only the oracle modes look ahead: the
//! driver buffers `lead` seconds of trace for them (half the TTL by
//! default), at most [`MAX_BUFFERED`] requests (about 80 bytes each); on a
//! trace too busy for that, the oracles look less far ahead and their
//! result says so in its note. Memory is therefore bounded by that buffer,
//! the per-key state of the simulation (one cache entry per cached key, and
//! per mode a record of about 50 bytes for each key seen, up to
//! `--tracker-max-keys` of them beyond the cached ones: past that the
//! oldest are forgotten, [`sim::Sim`], and the result's note says how
//! many), the tracker's and the learned predictor's caps, never by the
//! trace's length or its number of distinct keys.
//!
//! Timestamps that go backwards are clamped to the latest seen (virtual time
//! never decreases).

pub mod chart;
pub mod cli;
pub mod modes;
pub mod quality;
pub mod report;
pub mod sim;
pub mod sketch;
pub mod trace;

use std::collections::VecDeque;
use std::io;

/// Most requests buffered for the oracles' look-ahead.
pub const MAX_BUFFERED: usize = 1_000_000;

use modes::{Mode, ModeConfig, ModeResult};
use trace::Request;

/// What to do with the writes of block traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes {
    /// Count them as accesses (what libCacheSim does).
    Access,
    /// Leave them out.
    Skip,
}

/// One replay run.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Mode names, in report order.
    pub modes: Vec<String>,
    pub mode: ModeConfig,
    pub writes: Writes,
    /// Most requests buffered for the oracles' look-ahead ([`MAX_BUFFERED`]).
    pub max_buffered: usize,
}

/// The outcome of one replay.
#[derive(Debug, Clone)]
pub struct Report {
    /// The trace's name (file name).
    pub trace: String,
    pub format: String,
    /// Requests replayed (after `Writes::Skip`).
    pub requests: u64,
    pub writes_skipped: u64,
    /// First and last request time.
    pub first_at: f64,
    pub last_at: f64,
    /// Wall-clock seconds the replay took.
    pub elapsed_secs: f64,
    pub config: ModeConfig,
    /// Per mode, in the order asked.
    pub modes: Vec<(String, ModeResult)>,
}

/// Replays `trace` through every mode of `cfg`. An unknown mode name is an
/// error before anything is read; a predictor that is not built in makes
/// its mode "unavailable".
pub fn run(
    trace: impl Iterator<Item = io::Result<Request>>,
    name: &str,
    format: &str,
    cfg: &ReplayConfig,
) -> io::Result<Report> {
    let started = std::time::Instant::now();
    // Per mode: the running mode, or why it is unavailable.
    type Run = (String, Result<Box<dyn Mode>, String>);
    let mut runs: Vec<Run> = Vec::new();
    for m in &cfg.modes {
        let built = modes::build(m, &cfg.mode)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let entry = match built {
            Some(mode) => Ok(mode),
            None => Err(format!(
                "predictor {:?} is not built into this binary",
                modes::predictor_name(m).unwrap_or(m)
            )),
        };
        runs.push((m.clone(), entry));
    }
    let mut active: Vec<&mut Box<dyn Mode>> = runs
        .iter_mut()
        .filter_map(|(_, r)| r.as_mut().ok())
        .collect();
    let lead = active.iter().map(|m| m.lookahead()).fold(0.0, f64::max);
    let mut buf: VecDeque<Request> = VecDeque::new();
    // The shortest look-ahead the buffer's cap left the oracles.
    let mut shortest_lead = f64::INFINITY;
    let (mut requests, mut skipped) = (0u64, 0u64);
    let (mut first, mut last) = (f64::NAN, f64::NEG_INFINITY);
    for r in trace {
        let mut r = r?;
        if r.write && cfg.writes == Writes::Skip {
            skipped += 1;
            continue;
        }
        if r.at < last {
            r.at = last;
        }
        last = r.at;
        if first.is_nan() {
            first = r.at;
        }
        requests += 1;
        if lead <= 0.0 {
            for m in active.iter_mut() {
                m.access(&r);
            }
            continue;
        }
        for m in active.iter_mut() {
            m.foresee(&r);
        }
        buf.push_back(r);
        while buf
            .front()
            .is_some_and(|f| f.at + lead < last || buf.len() > cfg.max_buffered.max(1))
        {
            if let Some(f) = buf.pop_front() {
                if f.at + lead >= last {
                    shortest_lead = shortest_lead.min(last - f.at);
                }
                for m in active.iter_mut() {
                    m.access(&f);
                }
            }
        }
    }
    for f in buf.drain(..) {
        for m in active.iter_mut() {
            m.access(&f);
        }
    }
    let end = if last.is_finite() { last } else { 0.0 };
    let results = runs
        .into_iter()
        .map(|(name, r)| {
            let result = match r {
                Ok(mut m) => {
                    let looks_ahead = m.lookahead() > 0.0;
                    let mut result = m.finish(end);
                    if looks_ahead && shortest_lead < lead {
                        result.add_note(format!(
                            "looked ahead as little as {shortest_lead:.1} s instead of {lead:.1} s \
                             ({} requests buffered at most)",
                            cfg.max_buffered
                        ));
                    }
                    let forgotten = result.stats.as_ref().map_or(0, |s| s.keys_forgotten);
                    if forgotten > 0 {
                        result.add_note(format!(
                            "{forgotten} keys forgotten to keep the memory of keys within \
                             {} (--tracker-max-keys): their later misses count as cold",
                            cfg.mode.sim.max_remembered
                        ));
                    }
                    result
                }
                Err(note) => ModeResult::unavailable(note),
            };
            (name, result)
        })
        .collect();
    Ok(Report {
        trace: name.to_string(),
        format: format.to_string(),
        requests,
        writes_skipped: skipped,
        first_at: if first.is_nan() { 0.0 } else { first },
        last_at: end,
        elapsed_secs: started.elapsed().as_secs_f64(),
        config: cfg.mode.clone(),
        modes: results,
    })
}

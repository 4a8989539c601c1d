//! `warming replay`: command-line arguments and the run that prints the
//! table and writes the JSON and the chart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::modes::{self, ModeConfig};
use super::sim::{Capacity, SimConfig};
use super::trace::{self, Clock, Format};
use super::{ReplayConfig, Writes, chart, report};

/// Arguments of `warming replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The access trace.
    #[arg(long)]
    pub trace: PathBuf,
    /// cloudphysics, vscsi, cache2k, oracle-general, txt, twitter, csv, access-jsonl, lcs,
    /// address, adapt-size, arc, lirs2, corda, scarab, msr, systor, tencent-block or
    /// tencent-photo; Caffeine's names (lirs, snia-cambridge, ...) work too (default: from the
    /// file name, the first bytes and the first line; gzip, bzip2, xz and zstd files are
    /// decompressed, known by their magic number).
    #[arg(long)]
    pub format: Option<String>,
    /// Modes to compare, comma-separated: none, refresh-ahead, xfetch,
    /// heuristic, learned, oracle, oracle-seen, predictor:NAME.
    #[arg(
        long,
        default_value = "none,refresh-ahead,xfetch,heuristic,learned,oracle,oracle-seen"
    )]
    pub modes: String,
    /// Cache capacity: entries (`100000`) or bytes (`64MiB`, `1GB`).
    #[arg(long, default_value = "1000000")]
    pub cache_size: String,
    /// TTL of a cached value, seconds (a trace's own TTL column wins).
    #[arg(long, default_value_t = 3600.0)]
    pub ttl: f64,
    /// Origin budget, fetches per second (0 = unlimited).
    #[arg(long, default_value_t = 100.0)]
    pub origin_rps: f64,
    /// Origin latency per fetch, milliseconds.
    #[arg(long, default_value_t = 100.0)]
    pub origin_latency_ms: f64,
    /// Requests per second, for traces without timestamps.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Virtual unix time of the first request of a trace without timestamps.
    #[arg(long, default_value_t = 0.0)]
    pub start: f64,
    /// Writes of block traces: `access` (count as reads, as libCacheSim) or `skip`.
    #[arg(long, default_value = "access")]
    pub writes: String,
    /// Most keys one firing of the built-in `expiry-refresh` schedule may
    /// queue in the predictor modes (default: what the origin budget
    /// fetches until the next firing, as the service).
    #[arg(long)]
    pub warm_limit: Option<usize>,
    /// Do not run the built-in `expiry-refresh` schedule in the predictor modes.
    #[arg(long)]
    pub no_refresh: bool,
    /// Do not run the built-in schedules in the predictor modes.
    #[arg(long)]
    pub no_schedules: bool,
    /// Time zone of the schedules.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// The access tracker's cap on keys.
    #[arg(long, default_value_t = 1_000_000)]
    pub tracker_max_keys: usize,
    /// Prediction-quality window, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub quality_window: f64,
    /// Prediction-quality K values, comma-separated.
    #[arg(long, default_value = "10,100,1000,10000")]
    pub quality_k: String,
    /// Skip the prediction-quality figures: each window they rank every
    /// tracked key, about half of a `learned` replay's time.
    #[arg(long)]
    pub no_quality: bool,
    /// refresh-ahead: refresh after this fraction of the TTL.
    #[arg(long, default_value_t = 0.8)]
    pub refresh_fraction: f64,
    /// xfetch: beta.
    #[arg(long, default_value_t = 1.0)]
    pub xfetch_beta: f64,
    /// oracle: seconds ahead of a read its warm may start (default TTL/2).
    #[arg(long)]
    pub oracle_lead: Option<f64>,
    /// learned: width of the band around each expiry, seconds (the
    /// service's `WARMING_LEARNED_BAND`).
    #[arg(long, default_value_t = 120)]
    pub learned_band: u64,
    /// learned: the expiry gate (the TTL assumed) in seconds, 0 = off (`WARMING_LEARNED_IDLE_GATE`;
    /// default: the TTL).
    #[arg(long)]
    pub learned_idle_gate: Option<u64>,
    /// learned: lowest probability predicted (`WARMING_LEARNED_MIN_PROBABILITY`).
    #[arg(long, default_value_t = 0.0)]
    pub learned_min_probability: f32,
    /// learned: lowest probability predicted once the online model has
    /// trained on 500 labelled examples (`WARMING_LEARNED_TRAINED_MIN_PROBABILITY`).
    #[arg(long, default_value_t = crate::predict::learned::DEFAULT_TRAINED_MIN_PROBABILITY)]
    pub learned_trained_min_probability: f32,
    /// learned: score with this ONNX model instead of the online one
    /// (`WARMING_PREDICTOR_MODEL`; needs the `onnx` cargo feature).
    #[arg(long)]
    pub predictor_model: Option<PathBuf>,
    /// Eviction of the simulated cache: `lru` (as the embedded cache) or
    /// `tinylfu` (LRU behind a frequency admission filter, moka's and
    /// Caffeine's default, for caches built that way).
    #[arg(long, default_value = "lru")]
    pub eviction: String,
    /// Window the schedules' predictions are for, seconds (the service's
    /// `WARMING_PREDICT_WINDOW`); the quality figures use `--quality-window`.
    #[arg(long, default_value_t = 3600.0)]
    pub predict_window: f64,
    /// Strategy of the schedules that name none (the service's
    /// `WARMING_DEFAULT_STRATEGY`): selective, breadth or priority.
    #[arg(long, default_value = "priority")]
    pub strategy: String,
    /// Seed of the random numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw the PNG chart here.
    #[arg(long)]
    pub chart: Option<PathBuf>,
}

impl ReplayArgs {
    /// The replay configuration, or what is wrong with the arguments.
    pub fn config(&self, format: Format) -> Result<ReplayConfig, String> {
        let capacity = Capacity::parse(&self.cache_size)?;
        let positive = |v: f64, what: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(format!("{what} must be a positive number, got {v}"))
            }
        };
        let ttl = positive(self.ttl, "--ttl")?;
        positive(self.rate, "--rate")?;
        if !(self.origin_rps.is_finite() && self.origin_rps >= 0.0) {
            return Err("--origin-rps must be 0 or more".into());
        }
        if !(self.origin_latency_ms.is_finite() && self.origin_latency_ms >= 0.0) {
            return Err("--origin-latency-ms must be 0 or more".into());
        }
        let writes = match self.writes.as_str() {
            "access" => Writes::Access,
            "skip" => Writes::Skip,
            w => return Err(format!("--writes {w:?}: expected access or skip")),
        };
        let sim = SimConfig {
            capacity,
            ttl,
            latency: self.origin_latency_ms / 1000.0,
            rps: self.origin_rps,
            admission: match self.eviction.as_str() {
                "tinylfu" => true,
                "lru" => false,
                e => return Err(format!("--eviction {e:?}: expected tinylfu or lru")),
            },
            max_remembered: self.tracker_max_keys,
        };
        let mut mode = ModeConfig::new(sim, format.key_space());
        mode.refresh_fraction = self.refresh_fraction;
        mode.xfetch_beta = self.xfetch_beta;
        mode.seed = self.seed;
        if let Some(lead) = self.oracle_lead {
            mode.oracle_lead = positive(lead, "--oracle-lead")?;
        }
        let p = &mut mode.predictive;
        if self.warm_limit == Some(0) {
            return Err("--warm-limit must be at least 1".into());
        }
        p.warm_limit = self.warm_limit;
        if !(0.0..=1.0).contains(&self.learned_min_probability) {
            return Err("--learned-min-probability must be within 0..=1".into());
        }
        if !(0.0..=1.0).contains(&self.learned_trained_min_probability) {
            return Err("--learned-trained-min-probability must be within 0..=1".into());
        }
        mode.predictor_settings.learned_trained_min_probability =
            self.learned_trained_min_probability;
        mode.predictor_settings.learned_band = Some(Duration::from_secs(self.learned_band));
        mode.predictor_settings.learned_min_probability = self.learned_min_probability;
        mode.predictor_settings.seed = Some(self.seed);
        mode.predictor_settings.learned_idle_gate = self.learned_idle_gate.map(Duration::from_secs);
        if let Some(model) = &self.predictor_model {
            if !cfg!(feature = "onnx") {
                return Err(
                    "--predictor-model needs a build with the onnx feature (cargo build --release --features onnx)"
                        .into(),
                );
            }
            if !model.is_file() {
                return Err(format!(
                    "--predictor-model {}: no such file",
                    model.display()
                ));
            }
            mode.predictor_settings.model_path = Some(model.clone());
        }
        p.default_strategy = self
            .strategy
            .parse()
            .map_err(|e| format!("--strategy {:?}: {e}", self.strategy))?;
        p.schedules = !self.no_schedules;
        p.refresh = !self.no_refresh;
        p.timezone = self.timezone.clone();
        p.tracker_max_keys = self.tracker_max_keys;
        p.quality_window = positive(self.quality_window, "--quality-window")?;
        p.quality_ks = self
            .quality_k
            .split(',')
            .map(|k| k.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--quality-k {:?}: expected numbers", self.quality_k))?;
        if self.no_quality {
            p.quality_ks.clear();
        }
        p.predict_window =
            Duration::from_secs_f64(positive(self.predict_window, "--predict-window")?);
        let list = modes::parse_list(&self.modes);
        if list.is_empty() {
            return Err("--modes names no mode".into());
        }
        Ok(ReplayConfig {
            modes: list,
            mode,
            writes,
            max_buffered: crate::replay::MAX_BUFFERED,
        })
    }
}

/// Runs `warming replay`.
pub fn main(args: ReplayArgs) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warming replay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &ReplayArgs) -> Result<(), String> {
    let format = match &args.format {
        Some(f) => Format::parse(f)?,
        None => {
            Format::detect(&args.trace).map_err(|e| format!("{}: {e}", args.trace.display()))?
        }
    };
    let cfg = args.config(format)?;
    let clock = Clock {
        start: args.start,
        rate: args.rate,
    };
    let input = trace::open(&args.trace, format, clock)
        .map_err(|e| format!("{}: {e}", args.trace.display()))?;
    let name = args.trace.file_name().map_or_else(
        || args.trace.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let r = super::run(input, &name, format.name(), &cfg).map_err(|e| format!("{name}: {e}"))?;
    print!("{}", report::table(&r));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&r)).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        chart::draw(&r, path)?;
    }
    Ok(())
}

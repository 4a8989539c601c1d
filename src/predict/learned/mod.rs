//! The `learned` predictor: a model trained online from the service's own
//! access history, which predicts the probability that a key is requested
//! within the next window and warms the likeliest keys.
//!
//! # How it works
//!
//! - **State** ([`features::KeyState`], updated in [`Predictor::observe`],
//!   O(1) per access): per key, decayed counts at four half-lives, first and
//!   last access, count, inter-arrival statistics and a coarse hour-of-day /
//!   day-of-week profile; per key prefix, decayed counts in a fixed-size
//!   hashed table. At most `max_keys` keys are kept (sharded; a full shard
//!   evicts its coldest ~10% by 3-h decayed count), so memory is bounded
//!   whatever number of distinct keys arrives: about 100 bytes per key plus
//!   a fixed 1 MiB of prefix table.
//! - **Expiry gate** ([`Gate`]): warming saves a miss only for a key
//!   whose cached value expires before it is read again. The predictor
//!   models when each key's value expires (`KeyState::expires`): one gate
//!   after a read that followed the previous value's expiry (a read-through
//!   miss), or as the service tells it of a write ([`Predictor::written`]:
//!   a warm, or a miss of its own read-through, with the TTL that value was
//!   given, e.g. the origin's `max-age`). The candidates
//!   are the keys whose modelled value expires within `band / 2` of now, or
//!   would, had it been rewritten at each expiry since (a key read often
//!   becomes a candidate one TTL after its last miss; a key warmed gives its
//!   place to others until its warmed value nears expiry). A key whose
//!   current value is a warm nobody has read is not a candidate until it
//!   is read, so warming wastes at most one fetch per read. Gate: the TTL
//!   (`WARMING_LEARNED_IDLE_GATE`, else the service's `default_ttl`,
//!   following its run-time changes; 0 = off, every key is a candidate);
//!   band: 120 s (`WARMING_LEARNED_BAND`). Other keys are never predicted.
//! - **Training** ([`Predictor::tick`]): every `sample_every` seconds the
//!   predictor snapshots the feature vectors of `samples` candidate keys
//!   drawn uniformly; `horizon` seconds later each snapshot is labelled "was
//!   the key requested after the snapshot" (its last access is newer than
//!   the snapshot) and fed to the model (one SGD step each). With a gate the
//!   horizon is the gate (one TTL: "does a refresh now save a miss");
//!   without, the `window` of the latest `predict` call, clamped to
//!   `60..=max_horizon` seconds (default 900 s).
//! - **Model** ([`model::Logistic`]): logistic regression with AdaGrad,
//!   starting from hand-set prior weights so it ranks sensibly before the
//!   first label. With the `onnx` cargo feature and
//!   `WARMING_PREDICTOR_MODEL=path.onnx`, a model trained offline scores
//!   instead (see `onnx.rs`; the online model keeps training but is unused).
//! - **Prediction** ([`Predictor::predict`]): every candidate is scored (the
//!   probability; keys under `min_probability` are dropped, and once the
//!   model has trained on `trained_after` labels, keys under
//!   `trained_min_probability` too) and the top
//!   `limit` chosen with a bounded heap, O(n log limit). Before the
//!   predictor has seen any access (e.g. just after it was selected at run
//!   time), it answers with the heuristic on the service's tracker.
//!   [`Predictor::rank`] (replay's prediction quality) scores every key,
//!   candidate or not.
//!
//! # The feature vector
//!
//! [`features::NUM_FEATURES`] (17) `f32`s, in the order and with the
//! definitions of [`features::FEATURE_NAMES`]; the same vector is the input
//! of an ONNX model (`[N, 17]` float32). `docs/learned-predictor.md`
//! explains how to compute it from logs to train a model offline.
//!
//! # Configuration (environment, read when the predictor is created)
//!
//! - `WARMING_PREDICTOR_MODEL`: path of an ONNX model (needs the `onnx`
//!   feature; without it, or if the file cannot be loaded, an error is
//!   logged and the online model is used).
//! - `WARMING_LEARNED_MAX_KEYS`: keys with feature state (default 262,144).
//! - `WARMING_LEARNED_IDLE_GATE`: the expiry gate (TTL) in seconds, 0 = off
//!   (default: `WARMING_DEFAULT_TTL` if set, else 3600).
//! - `WARMING_LEARNED_BAND`: the band around each expiry, seconds (120).
//! - `WARMING_LEARNED_MIN_PROBABILITY`: lowest score predicted (0).
//! - `WARMING_LEARNED_TRAINED_MIN_PROBABILITY`: lowest score of the online
//!   model predicted once it has trained on 500 labels (0.5).

pub mod block;
pub mod features;
pub mod model;
#[cfg(feature = "onnx")]
pub mod onnx;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use compact_str::CompactString;
use foldhash::fast::FixedState;
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};

use self::block::{BLOCK, Block, Pass};
use self::features::{Context, Features, KeyState, PrefixTable, features, prefix_of};
use self::model::{Logistic, sigmoid};
use super::{HeuristicPredictor, Prediction, Predictor, Write};
use crate::access::AccessTracker;
use crate::access::topk::key_lead;

/// Name used in configuration.
pub const NAME: &str = "learned";

const SHARDS: usize = 16;
/// Fewest keys a sparse-candidate pass of the training snapshot looks at.
const SCAN_MIN: usize = 8192;
/// The window assumed before the first `predict` call (the service's default).
const DEFAULT_WINDOW_SECS: u32 = 3600;
/// Default width of the band around each expiry: two rounds of a once-a-minute
/// predictive refresh.
const DEFAULT_BAND_SECS: u32 = 120;
/// The service's default TTL (`WARMING_DEFAULT_TTL`), the default gate.
const DEFAULT_TTL_SECS: u32 = 3600;
const UNSET: u64 = u64::MAX;
/// Default of [`LearnedConfig::trained_min_probability`]: a warm is worth
/// its fetch when it is likelier read than not.
pub const DEFAULT_TRAINED_MIN_PROBABILITY: f32 = 0.5;
/// Default of [`LearnedConfig::trained_after`].
const TRAINED_AFTER: u64 = 500;
/// The base is set this long before the first access, so that accesses
/// recorded out of order (older than the first one) still fit.
const BASE_SLACK: u64 = 7 * 86_400;

/// Tunables of the learned predictor.
#[derive(Debug, Clone)]
pub struct LearnedConfig {
    /// Most keys with feature state.
    pub max_keys: usize,
    /// Seconds between two training snapshots.
    pub sample_every_secs: u64,
    /// Keys per snapshot.
    pub samples: usize,
    /// Longest label horizon, seconds.
    pub max_horizon_secs: u32,
    /// Horizon used before the first `predict` call, seconds.
    pub default_horizon_secs: u32,
    /// Most snapshots waiting for their label.
    pub max_pending: usize,
    /// Slots of the prefix table (power of two).
    pub prefix_slots: usize,
    /// AdaGrad learning rate and L2 penalty.
    pub learning_rate: f32,
    pub l2: f32,
    /// Seed of the sampler.
    pub seed: u64,
    /// The expiry gate (see the module doc).
    pub gate: Gate,
    /// Keys scored under this are never predicted.
    pub min_probability: f32,
    /// Once the online model has trained on `trained_after` labelled
    /// examples, keys it scores under this are not predicted either: its
    /// probabilities then estimate the chance that a warm is read before
    /// it expires. Before, they come from the hand-set prior and are not cut.
    pub trained_min_probability: f32,
    /// Labelled examples after which `trained_min_probability` applies.
    pub trained_after: u64,
    /// Width of the band around each expiry, seconds; `None`:
    /// the `window` of the `predict` call. It should cover the interval
    /// between two predictive runs that act on the answer.
    pub band: Option<u32>,
}

/// Which keys are candidates: keys whose cached value (as modelled from
/// the reads and warms seen) expires now, the gate being the TTL.
///
/// Warming a key whose value has plenty of life left is wasted; the misses
/// warming can save are reads after a value expired. The predictor does
/// not know the TTL: [`LearnedPredictor::from_settings`] takes it from
/// `WARMING_LEARNED_IDLE_GATE` (seconds, 0 = off), else the service's
/// `default_ttl` ([`Gate::Ttl`], updated by [`Predictor::ttl_changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Every key is a candidate.
    Off,
    /// The gate is this many seconds.
    Secs(u32),
    /// The gate is the service's `default_ttl` (these many seconds at first),
    /// following its changes ([`Predictor::ttl_changed`]).
    Ttl(u32),
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            max_keys: 1 << 18,
            sample_every_secs: 30,
            samples: 256,
            max_horizon_secs: 900,
            default_horizon_secs: 900,
            max_pending: 200_000,
            prefix_slots: 1 << 16,
            learning_rate: 0.05,
            l2: 1e-5,
            seed: 0x5eed,
            gate: Gate::Ttl(DEFAULT_TTL_SECS),
            min_probability: 0.0,
            trained_min_probability: DEFAULT_TRAINED_MIN_PROBABILITY,
            trained_after: TRAINED_AFTER,
            band: Some(DEFAULT_BAND_SECS),
        }
    }
}

struct Entry {
    key: CompactString,
    hash: u64,
    prefix_hash: u64,
    state: KeyState,
}

struct Shard {
    /// Indexes into `entries`.
    index: HashTable<u32>,
    entries: Vec<Entry>,
    cap: usize,
    /// Newest relative time seen by this shard.
    latest: u32,
}

impl Shard {
    fn new(cap: usize) -> Self {
        Shard {
            index: HashTable::new(),
            entries: Vec::new(),
            cap,
            latest: 0,
        }
    }

    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        self.index
            .find(hash, |&i| self.entries[i as usize].key == key)
            .map(|&i| i as usize)
    }

    fn find_hash(&self, hash: u64) -> Option<&Entry> {
        self.index
            .find(hash, |&i| self.entries[i as usize].hash == hash)
            .map(|&i| &self.entries[i as usize])
    }

    /// Drops the coldest ~10% (at least one) and rebuilds the index.
    fn evict(&mut self) {
        let n = self.entries.len();
        if n == 0 {
            return;
        }
        let k = (n / 10).max(1);
        let now = self.latest;
        let mut w: Vec<f32> = self.entries.iter().map(|e| e.state.warmth(now)).collect();
        let (_, &mut threshold, _) = w.select_nth_unstable_by(k - 1, f32::total_cmp);
        let below = w.iter().filter(|&&x| x < threshold).count();
        drop(w);
        let mut ties = k - below;
        self.entries.retain(|e| {
            let x = e.state.warmth(now);
            if x < threshold {
                false
            } else if x == threshold && ties > 0 {
                ties -= 1;
                false
            } else {
                true
            }
        });
        self.index.clear();
        for (i, e) in self.entries.iter().enumerate() {
            let entries = &self.entries;
            self.index
                .insert_unique(e.hash, i as u32, |&j| entries[j as usize].hash);
        }
    }
}

/// A pending training example: features at `at`, labelled at `at + horizon`.
struct Pending {
    hash: u64,
    at: u64,
    horizon: u32,
    x: Features,
}

struct Trainer {
    model: Logistic,
    pending: std::collections::VecDeque<Pending>,
    last_snapshot: Option<u64>,
    rng: u64,
    positives: u64,
    labelled: u64,
    /// The first shard of the next sparse-candidate pass.
    scan_from: usize,
}

impl Trainer {
    /// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
    /// number generators", OOPSLA 2014).
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// How the keys are scored.
enum Scorer {
    /// The online logistic regression.
    Online,
    /// A model trained offline.
    #[cfg(feature = "onnx")]
    Onnx(onnx::OnnxModel),
}

/// Statistics of the predictor, for tests, examples and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedStats {
    pub keys: usize,
    pub examples: u64,
    pub positives: u64,
    pub pending: usize,
    /// Running log-loss of the online model on examples before it trained on them.
    pub running_loss: f64,
    pub weights: Vec<f32>,
    pub bias: f32,
}

/// The learned predictor (see the module doc).
pub struct LearnedPredictor {
    cfg: LearnedConfig,
    /// Seeded from `seed`: the same seed gives the same shards, samples and
    /// answers (replay); the service seeds it at random.
    hasher: FixedState,
    shards: Box<[Mutex<Shard>]>,
    prefixes: Box<[Mutex<PrefixTable>]>,
    /// `top_each`'s buffer of scored keys, kept between calls.
    scratch: Mutex<Vec<Scored>>,
    base: AtomicU64,
    horizon: AtomicU32,
    /// The gate in seconds, from the latest `predict` call.
    gate_secs: AtomicU32,
    /// The service's `default_ttl`, seconds (the gate under [`Gate::Ttl`]).
    ttl_secs: AtomicU32,
    /// The window of the latest `predict` call, seconds.
    window_secs: AtomicU32,
    trainer: Mutex<Trainer>,
    /// The model used by `predict`, copied from the trainer after each tick.
    model: RwLock<Logistic>,
    /// Labelled examples the model has trained on (the trainer's count,
    /// copied after each tick).
    labelled: AtomicU64,
    scorer: Scorer,
}

impl Default for LearnedPredictor {
    fn default() -> Self {
        LearnedPredictor::new(LearnedConfig::default())
    }
}

impl LearnedPredictor {
    /// A predictor with the online model.
    pub fn new(cfg: LearnedConfig) -> Self {
        let per_shard = cfg.max_keys.div_ceil(SHARDS);
        let model = Logistic::new(cfg.learning_rate, cfg.l2);
        LearnedPredictor {
            hasher: FixedState::with_seed(cfg.seed),
            shards: (0..SHARDS)
                .map(|i| {
                    let cap = if i < cfg.max_keys % SHARDS || cfg.max_keys % SHARDS == 0 {
                        per_shard
                    } else {
                        per_shard - 1
                    };
                    Mutex::new(Shard::new(cap.min(cfg.max_keys)))
                })
                .collect(),
            prefixes: (0..SHARDS)
                .map(|_| Mutex::new(PrefixTable::new(cfg.prefix_slots / SHARDS)))
                .collect(),
            scratch: Mutex::new(Vec::new()),
            base: AtomicU64::new(UNSET),
            horizon: AtomicU32::new(
                cfg.default_horizon_secs
                    .clamp(60, cfg.max_horizon_secs.max(60)),
            ),
            window_secs: AtomicU32::new(DEFAULT_WINDOW_SECS),
            gate_secs: AtomicU32::new(match cfg.gate {
                Gate::Off => 0,
                Gate::Secs(s) | Gate::Ttl(s) => s,
            }),
            ttl_secs: AtomicU32::new(match cfg.gate {
                Gate::Ttl(s) => s,
                _ => DEFAULT_TTL_SECS,
            }),
            trainer: Mutex::new(Trainer {
                model: model.clone(),
                pending: Default::default(),
                last_snapshot: None,
                rng: cfg.seed,
                positives: 0,
                labelled: 0,
                scan_from: 0,
            }),
            model: RwLock::new(model),
            labelled: AtomicU64::new(0),
            scorer: Scorer::Online,
            cfg,
        }
    }

    /// The predictor as the service (or replay) creates it from the typed
    /// configuration: [`LearnedConfig::default`] adjusted by `settings`.
    pub fn from_settings(settings: &crate::predict::PredictorSettings) -> Self {
        let mut cfg = LearnedConfig {
            seed: settings.seed.unwrap_or_else(|| {
                std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
            }),
            max_keys: settings.learned_max_keys,
            min_probability: settings.learned_min_probability,
            trained_min_probability: settings.learned_trained_min_probability,
            band: settings
                .learned_band
                .map(|b| b.as_secs().min(u64::from(u32::MAX)) as u32),
            ..LearnedConfig::default()
        };
        let secs = |d: Duration| d.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        cfg.gate = match settings.learned_idle_gate {
            Some(gate) if gate.is_zero() => Gate::Off,
            Some(gate) => Gate::Secs(secs(gate)),
            None => Gate::Ttl(secs(settings.default_ttl)),
        };
        #[allow(unused_mut)]
        let mut p = LearnedPredictor::new(cfg);
        if let Some(path) = &settings.model_path {
            #[cfg(feature = "onnx")]
            match onnx::OnnxModel::load(path) {
                Ok(m) => {
                    tracing::info!(path = %path.display(), "learned predictor: ONNX model loaded");
                    p.scorer = Scorer::Onnx(m);
                }
                Err(e) => tracing::error!(
                    path = %path.display(),
                    "learned predictor: cannot load the ONNX model ({e:#}); using the online model"
                ),
            }
            #[cfg(not(feature = "onnx"))]
            tracing::error!(
                path = %path.display(),
                "WARMING_PREDICTOR_MODEL is set but this build has no `onnx` feature; using the online model"
            );
        }
        p
    }

    /// A predictor that scores with an ONNX model loaded from `path`.
    #[cfg(feature = "onnx")]
    pub fn with_onnx(cfg: LearnedConfig, path: &std::path::Path) -> anyhow::Result<Self> {
        let mut p = LearnedPredictor::new(cfg);
        p.scorer = Scorer::Onnx(onnx::OnnxModel::load(path)?);
        Ok(p)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        &self.shards[((hash >> 40) as usize) % SHARDS]
    }

    fn prefix_shard(&self, hash: u64) -> usize {
        ((hash >> 40) as usize) % SHARDS
    }

    fn base_for(&self, at: u64) -> u64 {
        let b = self.base.load(Ordering::Relaxed);
        if b != UNSET {
            return b;
        }
        let candidate = at.saturating_sub(BASE_SLACK);
        match self
            .base
            .compare_exchange(UNSET, candidate, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => candidate,
            Err(actual) => actual,
        }
    }

    fn rel(base: u64, at: u64) -> u32 {
        at.saturating_sub(base).min(u64::from(u32::MAX)) as u32
    }

    /// Keys with feature state.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lowest probability of the online model that is predicted now:
    /// `min_probability`, raised to `trained_min_probability` once the
    /// model has trained on `trained_after` labelled examples.
    fn online_min_probability(&self) -> f32 {
        if self.labelled.load(Ordering::Relaxed) >= self.cfg.trained_after {
            self.cfg
                .min_probability
                .max(self.cfg.trained_min_probability)
        } else {
            self.cfg.min_probability
        }
    }

    /// Bytes allocated for keys, states and indexes (not the fixed prefix table).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                let keys: usize = s
                    .entries
                    .iter()
                    .filter(|e| e.key.is_heap_allocated())
                    .map(|e| e.key.capacity())
                    .sum();
                s.entries.capacity() * std::mem::size_of::<Entry>()
                    + s.index.allocation_size()
                    + keys
            })
            .sum()
    }

    /// Bytes of the prefix table (fixed).
    pub fn prefix_bytes(&self) -> usize {
        self.prefixes.iter().map(|p| p.lock().bytes()).sum()
    }

    pub fn stats(&self) -> LearnedStats {
        let t = self.trainer.lock();
        let (w, b) = t.model.weights();
        LearnedStats {
            keys: self.len(),
            examples: t.labelled,
            positives: t.positives,
            pending: t.pending.len(),
            running_loss: t.model.running_loss(),
            weights: w.to_vec(),
            bias: b,
        }
    }

    /// The feature vector of `key` at `now` for a window of `horizon_secs`
    /// (None if the key has no state). For tests and offline checks.
    pub fn features_of(
        &self,
        key: &str,
        now_unix_secs: u64,
        horizon_secs: u32,
    ) -> Option<Features> {
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let (state, prefix_hash) = {
            let s = self.shard(hash).lock();
            let e = &s.entries[s.find(hash, key)?];
            (e.state, e.prefix_hash)
        };
        let ctx = self.context(base, now_unix_secs, horizon_secs);
        let p = self.prefixes[self.prefix_shard(prefix_hash)]
            .lock()
            .counts(prefix_hash, ctx.now_rel);
        Some(features(&state, p, &ctx))
    }

    fn context(&self, base: u64, now_unix: u64, horizon_secs: u32) -> Context {
        Context {
            now_rel: Self::rel(base, now_unix),
            now_unix,
            horizon_secs,
        }
    }

    /// Snapshots `samples` random keys at `now` for training.
    fn snapshot(&self, t: &mut Trainer, base: u64, now: u64) {
        let horizon = self.horizon.load(Ordering::Relaxed);
        let ctx = self.context(base, now, horizon);
        let prefixes: Vec<_> = self.prefixes.iter().map(|p| p.lock()).collect();
        let shards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let total: usize = shards.iter().map(|s| s.entries.len()).sum();
        if total == 0 {
            return;
        }
        let gate = self.gate_secs.load(Ordering::Relaxed);
        let band = band(
            Duration::from_secs(u64::from(self.window_secs.load(Ordering::Relaxed))),
            gate,
            self.cfg.band,
        );
        let wanted = self
            .cfg
            .samples
            .min(total)
            .min(per_snapshot(&self.cfg, horizon));
        let room = self.cfg.max_pending.saturating_sub(t.pending.len());
        let wanted = wanted.min(room);
        if wanted == 0 {
            return;
        }
        // Candidates are dense around a burst of expiries: a few random
        // draws find them. When they are sparse (few keys expire at a time
        // among many tracked, e.g. a quiet service), draws find almost none
        // and the model would go on untrained for many TTLs: then a pass
        // over a slice of the shards draws them uniformly (reservoir
        // sampling). A key stays a candidate for `band / sample_every`
        // snapshots, and the slice is that fraction of the shards, in
        // rotation: every candidate is looked at about once, for a fraction
        // of the cost of a full pass at every snapshot. A slice covers at
        // least `SCAN_MIN` keys (all of them in a small table), so that a
        // young predictor finds every candidate while the pass is cheap.
        let mut picked: Vec<(usize, usize)> = Vec::with_capacity(wanted);
        for _ in 0..4 * wanted {
            if picked.len() >= wanted {
                break;
            }
            let (s, i) = locate(&shards, t.below(total));
            if candidate(ctx.now_rel, &shards[s].entries[i].state, gate, band)
                && !picked.contains(&(s, i))
            {
                picked.push((s, i));
            }
        }
        if picked.len() < wanted {
            picked.clear();
            let per_band = (u64::from(band) / self.cfg.sample_every_secs.max(1)).max(1);
            let slice = (SHARDS as u64)
                .div_ceil(per_band)
                .max((SHARDS * SCAN_MIN).div_ceil(total) as u64)
                .min(SHARDS as u64) as usize;
            let first = t.scan_from;
            t.scan_from = (first + slice) % SHARDS;
            let mut seen = 0usize;
            for s in (first..first + slice).map(|s| s % SHARDS) {
                for (i, e) in shards[s].entries.iter().enumerate() {
                    if !candidate(ctx.now_rel, &e.state, gate, band) {
                        continue;
                    }
                    seen += 1;
                    if picked.len() < wanted {
                        picked.push((s, i));
                    } else {
                        let j = t.below(seen);
                        if j < wanted {
                            picked[j] = (s, i);
                        }
                    }
                }
            }
        }
        for (s, i) in picked {
            let e = &shards[s].entries[i];
            let p = prefixes[self.prefix_shard(e.prefix_hash)].counts(e.prefix_hash, ctx.now_rel);
            t.pending.push_back(Pending {
                hash: e.hash,
                at: now,
                horizon,
                x: features(&e.state, p, &ctx),
            });
        }
    }

    /// Labels and trains on every snapshot whose horizon has passed.
    fn train_due(&self, t: &mut Trainer, base: u64, now: u64) {
        while let Some(p) = t.pending.front() {
            if p.at + u64::from(p.horizon) > now {
                break;
            }
            let Some(p) = t.pending.pop_front() else {
                break;
            };
            let at_rel = Self::rel(base, p.at);
            let y = self
                .shard(p.hash)
                .lock()
                .find_hash(p.hash)
                .is_some_and(|e| e.state.last > at_rel);
            t.model.update(&p.x, y, 1.0);
            t.labelled += 1;
            t.positives += u64::from(y);
        }
    }
}

/// The shard and the index in it of the `i`-th entry over all shards.
fn locate(shards: &[parking_lot::MutexGuard<'_, Shard>], mut i: usize) -> (usize, usize) {
    for (s, shard) in shards.iter().enumerate() {
        if i < shard.entries.len() {
            return (s, i);
        }
        i -= shard.entries.len();
    }
    unreachable!("index below the total of entries")
}

/// Snapshots taken per round so that the examples waiting for their
/// label (`horizon / sample_every` rounds of them) fit in `max_pending`: a
/// long horizon (a TTL of a day) samples fewer keys per round, so training
/// goes on steadily instead of stopping while the queue is full.
fn per_snapshot(cfg: &LearnedConfig, horizon: u32) -> usize {
    let rounds = u64::from(horizon)
        .div_ceil(cfg.sample_every_secs.max(1))
        .max(1);
    ((cfg.max_pending as u64 / rounds) as usize).max(1)
}

/// Whether a key is a candidate: with `over` = seconds since the value
/// expired plus `band / 2`, `over >= 0` and `over mod gate < band`, i.e.
/// the key's value expires within `band / 2` (or expired that recently), or
/// would, had it been rewritten (to live one gate) at each expiry since.
/// A key whose current value is a warm nobody has read is never a
/// candidate: an unread warm is not followed by another until the key is
/// read, so warming wastes at most one fetch per read. With the gate off
/// every key is a candidate.
fn candidate(now_rel: u32, state: &KeyState, gate: u32, band: u32) -> bool {
    if gate == 0 {
        return true;
    }
    if state.value_reads == 0 {
        return false;
    }
    let ahead = now_rel.saturating_add(band / 2);
    ahead >= state.expires && (ahead - state.expires) % gate < band
}

/// The band around each expiry: `fixed`, else the window; at least 60 s
/// and at most the gate.
fn band(window: Duration, gate: u32, fixed: Option<u32>) -> u32 {
    fixed
        .unwrap_or(window.as_secs().min(u64::from(u32::MAX)) as u32)
        .clamp(60.min(gate), gate)
}

impl Predictor for LearnedPredictor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe(&self, key: &str, at_unix_secs: u64) {
        if self.cfg.max_keys == 0 {
            return;
        }
        let base = self.base_for(at_unix_secs);
        let rel = Self::rel(base, at_unix_secs);
        let hash = self.hasher.hash_one(key);
        let prefix_hash = {
            let mut s = self.shard(hash).lock();
            s.latest = s.latest.max(rel);
            if let Some(i) = s.find(hash, key) {
                let e = &mut s.entries[i];
                e.state.hit(rel, at_unix_secs);
                e.state
                    .read_through(rel, self.gate_secs.load(Ordering::Relaxed));
                e.prefix_hash
            } else {
                if s.entries.len() >= s.cap {
                    s.evict();
                }
                let prefix_hash = self.hasher.hash_one(prefix_of(key));
                let i = s.entries.len() as u32;
                s.entries.push(Entry {
                    key: CompactString::from(key),
                    hash,
                    prefix_hash,
                    state: KeyState::new(rel, at_unix_secs, self.gate_secs.load(Ordering::Relaxed)),
                });
                let Shard { index, entries, .. } = &mut *s;
                index.insert_unique(hash, i, |&j| entries[j as usize].hash);
                prefix_hash
            }
        };
        self.prefixes[self.prefix_shard(prefix_hash)]
            .lock()
            .hit(prefix_hash, rel);
    }

    fn written(&self, key: &str, at_unix_secs: u64, ttl: Duration, by: Write) {
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET {
            return;
        }
        let ttl = ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        let hash = self.hasher.hash_one(key);
        let mut s = self.shard(hash).lock();
        if let Some(i) = s.find(hash, key) {
            s.entries[i].state.rewritten(
                Self::rel(base, at_unix_secs),
                ttl,
                by == Write::ReadThrough,
            );
        }
    }

    fn status(&self) -> crate::protocol::PredictorStatus {
        let s = self.stats();
        crate::protocol::PredictorStatus {
            name: NAME.to_string(),
            tracked_keys: Some(s.keys),
            examples: Some(s.examples),
            positive_examples: Some(s.positives),
            pending_examples: Some(s.pending),
            trained: Some(s.examples >= self.cfg.trained_after),
            log_loss: (s.examples > 0).then_some(s.running_loss),
        }
    }

    fn tracks_writes(&self) -> bool {
        true
    }

    fn ttl_changed(&self, ttl: Duration) {
        let secs = ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        self.ttl_secs.store(secs, Ordering::Relaxed);
        if matches!(self.cfg.gate, Gate::Ttl(_)) {
            self.gate_secs.store(secs, Ordering::Relaxed);
        }
    }

    fn tick(&self, now_unix_secs: u64) {
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET {
            return;
        }
        let mut t = self.trainer.lock();
        self.train_due(&mut t, base, now_unix_secs);
        let due = t
            .last_snapshot
            .is_none_or(|s| now_unix_secs >= s + self.cfg.sample_every_secs);
        if due {
            t.last_snapshot = Some(now_unix_secs);
            self.snapshot(&mut t, base, now_unix_secs);
        }
        *self.model.write() = t.model.clone();
        self.labelled.store(t.labelled, Ordering::Relaxed);
    }

    fn predict(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
    ) -> Vec<Prediction> {
        super::collect(|each| self.top_each(tracker, now_unix_secs, window, limit, true, each))
    }

    /// Every key with state, ranked by the model's probability that it is
    /// read within the horizon, whatever its cached value's state.
    fn rank_each(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
        each: &mut dyn FnMut(&str, f64),
    ) {
        self.top_each(tracker, now_unix_secs, window, limit, false, each)
    }
}

impl LearnedPredictor {
    /// The `limit` likeliest keys, best first, each handed to `each`: of
    /// the candidates (`gated`: keys whose value expires now, cut at the
    /// minimum probabilities) for [`Predictor::predict`], of every key for
    /// [`Predictor::rank_each`].
    fn top_each(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
        gated: bool,
        each: &mut dyn FnMut(&str, f64),
    ) {
        if limit == 0 {
            return;
        }
        if gated {
            self.window_secs.store(
                window.as_secs().min(u64::from(u32::MAX)) as u32,
                Ordering::Relaxed,
            );
        }
        let gate = match self.cfg.gate {
            Gate::Off => 0,
            Gate::Secs(s) => s,
            Gate::Ttl(_) => self.ttl_secs.load(Ordering::Relaxed),
        };
        if gated {
            self.gate_secs.store(gate, Ordering::Relaxed);
        }
        // With a gate the question is whether a refresh now saves a miss:
        // whether the key is read within one TTL (the gate). Without one,
        // whether it is read within the window, clamped so that labels
        // arrive within minutes.
        let horizon = if gate > 0 {
            gate
        } else {
            window
                .as_secs()
                .clamp(60, u64::from(self.cfg.max_horizon_secs.max(60))) as u32
        };
        if gated {
            self.horizon.store(horizon, Ordering::Relaxed);
        }
        let band = band(window, gate, self.cfg.band);
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET || self.is_empty() {
            for p in HeuristicPredictor.predict(tracker, now_unix_secs, window, limit) {
                each(&p.key, p.score);
            }
            return;
        }
        // The horizon of the features (hour of day of the target,
        // `ln_horizon_min`): the label horizon with a gate, else the window
        // asked for, even beyond the training horizon's clamp.
        let ctx = self.context(
            base,
            now_unix_secs,
            if gate > 0 {
                gate
            } else {
                window.as_secs().min(u64::from(u32::MAX)) as u32
            },
        );
        let model = self.model.read().clone();
        let min_online = if gated {
            self.online_min_probability()
        } else {
            0.0
        };
        #[cfg(feature = "onnx")]
        let min_offline = if gated { self.cfg.min_probability } else { 0.0 };
        let kept = |e: &Entry| !gated || candidate(ctx.now_rel, &e.state, gate, band);
        // Score every kept key, one shard locked at a time, into a reused
        // buffer of (score, shard, index, hash); then choose the best
        // `limit` in linear time and copy only their keys. (A bounded heap
        // of keys costs O(n log limit) and a key copy per replacement:
        // replay's prediction quality ranks every key for K = 10,000.)
        let prefixes: Vec<_> = self.prefixes.iter().map(|p| p.lock()).collect();
        let mut scored = std::mem::take(&mut *self.scratch.lock());
        scored.clear();
        let pass = Pass::new(ctx);
        let mut block = Block::default();
        for (si, shard) in self.shards.iter().enumerate() {
            let s = shard.lock();
            match &self.scorer {
                Scorer::Online => {
                    // In blocks of keys (`block`): the same figures as
                    // `model.probability(&features(..))`, several keys per
                    // instruction.
                    let mut at = [0usize; BLOCK];
                    let mut n = 0;
                    let mut score = |at: &[usize]| {
                        // The prefix slots first, all at once: they are
                        // scattered over the prefix table, and loads that
                        // do not wait on each other overlap their misses.
                        let mut raw = [([0.0f32; 2], 0u32); BLOCK];
                        for (r, &i) in raw.iter_mut().zip(at) {
                            let h = s.entries[i].prefix_hash;
                            *r = prefixes[self.prefix_shard(h)].raw(h);
                        }
                        block.clear();
                        for (r, &i) in raw.iter().zip(at) {
                            block.push(&s.entries[i].state, *r, &pass);
                        }
                        let z = block.logits(&model, &pass);
                        for (&i, &z) in at.iter().zip(&z) {
                            let prob = sigmoid(z);
                            if prob >= min_online {
                                scored.push(Scored::new(prob, si, i, &s.entries[i]));
                            }
                        }
                    };
                    for (i, e) in s.entries.iter().enumerate() {
                        if kept(e) {
                            at[n] = i;
                            n += 1;
                            if n == BLOCK {
                                score(&at);
                                n = 0;
                            }
                        }
                    }
                    score(&at[..n]);
                }
                #[cfg(feature = "onnx")]
                Scorer::Onnx(m) => {
                    let mut scores = Vec::new();
                    let kept: Vec<usize> = (0..s.entries.len())
                        .filter(|&i| kept(&s.entries[i]))
                        .collect();
                    let batch: Vec<Features> = kept
                        .iter()
                        .map(|&i| {
                            let e = &s.entries[i];
                            let p = prefixes[self.prefix_shard(e.prefix_hash)]
                                .counts(e.prefix_hash, ctx.now_rel);
                            features(&e.state, p, &ctx)
                        })
                        .collect();
                    match m.score(&batch, &mut scores) {
                        Ok(()) => {
                            for (&i, sc) in kept.iter().zip(&scores) {
                                if *sc >= min_offline {
                                    scored.push(Scored::new(*sc, si, i, &s.entries[i]));
                                }
                            }
                        }
                        Err(err) => {
                            tracing::error!("learned predictor: ONNX inference failed: {err:#}");
                            return;
                        }
                    }
                }
            }
        }
        drop(prefixes);
        // The entries may have moved since (the service records accesses
        // meanwhile): keep those still where they were scored.
        let shards: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        let entry = |c: &Scored| &shards[c.shard as usize].entries[c.index as usize];
        scored.retain(|c| {
            shards[c.shard as usize]
                .entries
                .get(c.index as usize)
                .is_some_and(|e| e.hash == c.hash)
        });
        // Best first: higher score, then key ascending (deterministic
        // whatever the order the keys are stored in). `rank` packs the
        // score and the key's lead into one number, so most comparisons
        // are one integer comparison.
        let order = |a: &Scored, b: &Scored| {
            a.rank
                .cmp(&b.rank)
                .then_with(|| entry(a).key.cmp(&entry(b).key))
        };
        if scored.len() > limit {
            scored.select_nth_unstable_by(limit, order);
            scored.truncate(limit);
        }
        scored.sort_unstable_by(order);
        for c in &scored {
            each(entry(c).key.as_str(), f64::from(c.score()));
        }
        drop(shards);
        *self.scratch.lock() = scored;
    }
}

/// A scored key of [`LearnedPredictor::top_each`]: its place in the ranking,
/// where it is stored, and its hash to check that it is still there.
#[derive(Clone, Copy)]
struct Scored {
    /// Ascending = best first: the score's bits, ordered as `f32::total_cmp`
    /// and inverted (higher score first), above the key's first 8 bytes
    /// (big-endian, zero-padded: equal scores go by key, and this settles
    /// most of those ties without reaching for the keys).
    rank: u128,
    shard: u32,
    index: u32,
    hash: u64,
}

impl Scored {
    fn new(score: f32, shard: usize, index: usize, e: &Entry) -> Self {
        // NaN (a broken offline model) ranks as 0, as the bounded heap did.
        let score = if score.is_nan() { 0.0 } else { score };
        Scored {
            rank: (u128::from(!total_order_bits(score)) << 64) | u128::from(key_lead(&e.key)),
            shard: shard as u32,
            index: index as u32,
            hash: e.hash,
        }
    }

    fn score(&self) -> f32 {
        let bits = !((self.rank >> 64) as u32);
        // The inverse of `total_order_bits`.
        f32::from_bits(if bits & 0x8000_0000 != 0 {
            bits & 0x7fff_ffff
        } else {
            !bits
        })
    }
}

/// `x`'s bits mapped so that unsigned order is `f32::total_cmp`'s order:
/// negative numbers have every bit flipped, others only the sign bit.
fn total_order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

#[cfg(test)]
mod tests;

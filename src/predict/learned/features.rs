//! Per-key feature state of the learned predictor and the feature vector.
//!
//! Every access updates a [`KeyState`] (56 bytes) in O(1): exponentially
//! decayed counts at four half-lives, the first and last access, the count,
//! the reads of the current cached value,
//! running statistics of the log inter-arrival time, and a coarse
//! hour-of-day and day-of-week profile. Key prefixes get their own decayed
//! counts in a fixed-size hashed table ([`PrefixTable`]). [`features`] turns
//! that state into the [`NUM_FEATURES`] floats the model reads; the order,
//! definitions and units are documented on [`FEATURE_NAMES`] and in
//! `docs/learned-predictor.md`, so that a model can be trained offline.
//!
//! Decayed counts follow the usual exponentially-decayed counter: a count `c`
//! stored at time `t0` is worth `c * 2^(-(t - t0) / half_life)` at time `t`,
//! and an access adds 1 after decaying (Cormode et al., "Forward decay: a
//! practical time decay model for streaming systems", ICDE 2009, for the
//! general scheme). Inter-arrival statistics are exponentially weighted
//! mean and variance of `ln(1 + gap)` (Welford-style incremental update with
//! a fixed weight, as in Finch, "Incremental calculation of weighted mean and
//! variance", 2009).

/// Number of features in the vector.
pub const NUM_FEATURES: usize = 17;

/// Half-lives of the decayed counts, seconds: 5 min, 30 min, 3 h, 24 h.
pub const HALF_LIVES: [f32; 4] = [300.0, 1800.0, 10_800.0, 86_400.0];

/// Half-lives of the prefix counts, seconds: 5 min and 30 min.
pub const PREFIX_HALF_LIVES: [f32; 2] = [300.0, 1800.0];

/// Weight of the newest gap in the running gap statistics.
const GAP_WEIGHT: f32 = 0.3;

/// Slots of the hour-of-day profile (3 hours each, UTC).
pub const HOD_SLOTS: usize = 8;
pub(super) const DAY: u64 = 86_400;
pub(super) const WEEK: u64 = 7 * DAY;

/// Names of the features, in vector order. Units and definitions:
///
/// | # | name | definition |
/// |---|---|---|
/// | 0 | `ln_count_5m` | `ln(1 + c)`, `c` = accesses decayed with a 5-min half-life, at `now` |
/// | 1 | `ln_count_30m` | same, 30-min half-life |
/// | 2 | `ln_count_3h` | same, 3-h half-life |
/// | 3 | `ln_count_24h` | same, 24-h half-life |
/// | 4 | `ln_recency_min` | `ln(1 + minutes since the last access)` |
/// | 5 | `ln_total` | `ln(1 + accesses since first seen)` (while tracked) |
/// | 6 | `ln_age_min` | `ln(1 + minutes since first seen)` |
/// | 7 | `gap_mean` | EW mean of `ln(1 + seconds between accesses)`, 0 with < 2 accesses |
/// | 8 | `gap_std` | EW standard deviation of the same, 0 with < 3 accesses |
/// | 9 | `overdue` | `ln(1 + seconds since last access) - gap_mean`, 0 with < 2 accesses |
/// | 10 | `has_gaps` | 1 if the key was accessed at least twice, else 0 |
/// | 11 | `hod_lift` | share of the key's accesses in the 3-h UTC slot of `now + horizon/2`, times 8, minus 1, scaled by `min(1, age / 1 day)` |
/// | 12 | `dow_lift` | same for the UTC day of week (times 7, minus 1), scaled by `min(1, age / 7 days)` |
/// | 13 | `ln_prefix_5m` | `ln(1 + c)`, `c` = accesses to the key's prefix, 5-min half-life |
/// | 14 | `ln_prefix_30m` | same, 30-min half-life |
/// | 15 | `ln_horizon_min` | `ln(1 + horizon in minutes)`: the label horizon (the TTL with the gate on, else the window predicted) |
/// | 16 | `ln_value_reads` | `ln(1 + r)`, `r` = reads of the key's current cached value (since it was written, the read that wrote it included; at most 255); 0 once `now` is half a horizon past the value's expiry (it lived out unread) |
pub const FEATURE_NAMES: [&str; NUM_FEATURES] = [
    "ln_count_5m",
    "ln_count_30m",
    "ln_count_3h",
    "ln_count_24h",
    "ln_recency_min",
    "ln_total",
    "ln_age_min",
    "gap_mean",
    "gap_std",
    "overdue",
    "has_gaps",
    "hod_lift",
    "dow_lift",
    "ln_prefix_5m",
    "ln_prefix_30m",
    "ln_horizon_min",
    "ln_value_reads",
];

/// One feature vector.
pub type Features = [f32; NUM_FEATURES];

/// What the predictor keeps per key. Times are seconds since the
/// predictor's base (see `mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyState {
    pub first: u32,
    pub last: u32,
    /// When the key's cached value expires, as far as the predictor can
    /// tell: one TTL after the first access following the previous value's
    /// expiry (a read-through miss), or as a write it was told of (a warm,
    /// the service's own read-through) said, with that value's own TTL.
    pub expires: u32,
    pub count: u32,
    /// Decayed counts at [`HALF_LIVES`], as of `last`.
    pub decayed: [f32; 4],
    /// EW mean and variance of `ln(1 + gap)`.
    pub gap_mean: f32,
    pub gap_var: f32,
    /// Accesses per 3-h slot of the UTC day; halved together when one saturates.
    pub hod: [u8; HOD_SLOTS],
    /// Accesses per UTC day of week (0 = Thursday, 1970-01-01); halved together.
    pub dow: [u8; 7],
    /// Reads of the current value (saturating): how much it is used.
    pub value_reads: u8,
}

pub(super) fn decay(c: f32, dt: f32, half_life: f32) -> f32 {
    if dt <= 0.0 {
        c
    } else {
        c * exp2_neg(dt / half_life)
    }
}

/// `2^(-y)` for `y >= 0`, relative error below 1e-4: the integer part goes
/// to the exponent bits, the fraction through a least-squares quartic fit of `2^f`
/// on [0, 1). Feature extraction runs for every tracked key at every
/// prediction, so the libm calls are worth avoiding.
pub fn exp2_neg(y: f32) -> f32 {
    if y.is_nan() || y > 126.0 {
        return 0.0;
    }
    exp2_neg_in_range(y)
}

/// [`exp2_neg`] for `y` in `[0, 126]`, without branches, so that a loop of
/// it over many keys runs several per instruction (`block`).
#[inline(always)]
pub(super) fn exp2_neg_in_range(y: f32) -> f32 {
    let x = -y;
    // floor(x) for x in [-126, 0] without `f32::floor`, a libm call on
    // baseline x86-64 (no SSE4.1): truncation, one less when it rounded up.
    let t = x as i32;
    let i = t - i32::from(t as f32 > x);
    let f = x - i as f32;
    let p = 1.0 + f * (0.693_018_7 + f * (0.241_404_4 + f * (0.052_074_71 + f * 0.013_493_01)));
    f32::from_bits(((i + 127) as u32) << 23) * p
}

/// `ln(1 + x)` for `x >= 0`, absolute error below 1e-4: the exponent bits
/// of `1 + x` plus a least-squares fit `t * P4(t)` of
/// `log2(1 + t)`, `t` = mantissa - 1 in [0, 1).
#[inline(always)]
pub fn ln_1p(x: f32) -> f32 {
    let v = 1.0 + x.max(0.0);
    let bits = v.to_bits();
    let e = ((bits >> 23) & 0xff) as i32 - 127;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let t = m - 1.0;
    let log2_m = t
        * (1.441_825_8
            + t * (-0.708_682_1 + t * (0.415_421_95 + t * (-0.194_422_67 + t * 0.045_885_53))));
    (e as f32 + log2_m) * std::f32::consts::LN_2
}

fn bump(profile: &mut [u8], slot: usize) {
    if profile[slot] == u8::MAX {
        for p in profile.iter_mut() {
            *p /= 2;
        }
    }
    profile[slot] += 1;
}

pub(super) fn hod_slot(unix: u64) -> usize {
    ((unix % DAY) / (DAY / HOD_SLOTS as u64)) as usize
}

pub(super) fn dow_slot(unix: u64) -> usize {
    ((unix / DAY) % 7) as usize
}

impl KeyState {
    /// The state of a key first accessed at `rel` (relative) = `unix`,
    /// whose values live `ttl` seconds as far as the predictor knows (the
    /// first read is a miss that writes one).
    pub fn new(rel: u32, unix: u64, ttl: u32) -> Self {
        let mut s = KeyState {
            first: rel,
            last: rel,
            expires: rel.saturating_add(ttl),
            count: 1,
            decayed: [1.0; 4],
            gap_mean: 0.0,
            gap_var: 0.0,
            hod: [0; HOD_SLOTS],
            dow: [0; 7],
            value_reads: 1,
        };
        s.hod[hod_slot(unix)] = 1;
        s.dow[dow_slot(unix)] = 1;
        s
    }

    /// Records one access at `rel` (relative) = `unix`. An access older than
    /// `last` counts (without decay) but does not move `last` back.
    pub fn hit(&mut self, rel: u32, unix: u64) {
        let dt = rel.saturating_sub(self.last) as f32;
        for (c, hl) in self.decayed.iter_mut().zip(HALF_LIVES) {
            *c = decay(*c, dt, hl) + 1.0;
        }
        if rel >= self.last {
            let g = ln_1p(dt);
            if self.count == 1 {
                self.gap_mean = g;
                self.gap_var = 0.0;
            } else {
                let d = g - self.gap_mean;
                let inc = GAP_WEIGHT * d;
                self.gap_mean += inc;
                self.gap_var = (1.0 - GAP_WEIGHT) * (self.gap_var + d * inc);
            }
            self.last = rel;
        }
        self.first = self.first.min(rel);
        self.count = self.count.saturating_add(1);
        self.value_reads = self.value_reads.saturating_add(1);
        bump(&mut self.hod, hod_slot(unix));
        bump(&mut self.dow, dow_slot(unix));
    }

    /// A read at `rel` of a key whose cached values live `ttl` seconds
    /// (as far as the predictor knows): in a read-through cache, a read
    /// after the value expired writes a new one.
    pub fn read_through(&mut self, rel: u32, ttl: u32) {
        if ttl > 0 && rel >= self.expires {
            self.expires = rel.saturating_add(ttl);
            self.value_reads = 1;
        }
    }

    /// A fresh value, living `ttl` seconds, was written at `rel`: by a warm
    /// (`first_read` false: nobody has read it yet), or by the read-through
    /// miss of the read just recorded (`first_read`).
    pub fn rewritten(&mut self, rel: u32, ttl: u32, first_read: bool) {
        self.expires = rel.saturating_add(ttl);
        self.value_reads = u8::from(first_read);
    }

    /// Eviction warmth: the 3-h decayed count at `now` (relative).
    pub fn warmth(&self, now: u32) -> f32 {
        decay(
            self.decayed[2],
            now.saturating_sub(self.last) as f32,
            HALF_LIVES[2],
        )
    }
}

/// A fixed-size table of decayed counts per key prefix, indexed by the
/// prefix hash (collisions share a slot: a sketch, not an exact map).
#[derive(Debug, Clone)]
pub struct PrefixTable {
    slots: Box<[PrefixSlot]>,
    mask: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct PrefixSlot {
    counts: [f32; 2],
    last: u32,
}

impl PrefixTable {
    /// `slots` is rounded up to a power of two.
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        PrefixTable {
            slots: vec![PrefixSlot::default(); n].into_boxed_slice(),
            mask: n as u64 - 1,
        }
    }

    fn slot(&self, hash: u64) -> usize {
        (hash & self.mask) as usize
    }

    pub fn hit(&mut self, hash: u64, rel: u32) {
        let i = self.slot(hash);
        let s = &mut self.slots[i];
        let dt = rel.saturating_sub(s.last) as f32;
        for (c, hl) in s.counts.iter_mut().zip(PREFIX_HALF_LIVES) {
            *c = decay(*c, dt, hl) + 1.0;
        }
        s.last = s.last.max(rel);
    }

    /// Decayed counts at `now` (relative).
    pub fn counts(&self, hash: u64, now: u32) -> [f32; 2] {
        let s = &self.slots[self.slot(hash)];
        let dt = now.saturating_sub(s.last) as f32;
        [
            decay(s.counts[0], dt, PREFIX_HALF_LIVES[0]),
            decay(s.counts[1], dt, PREFIX_HALF_LIVES[1]),
        ]
    }

    /// The stored counts of `hash`'s slot and when they were last updated
    /// (relative), undecayed: [`PrefixTable::counts`] decays them to a time.
    pub(super) fn raw(&self, hash: u64) -> ([f32; 2], u32) {
        let s = &self.slots[self.slot(hash)];
        (s.counts, s.last)
    }

    /// Bytes of the table.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

/// The prefix of a key (see [`prefix_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix<'a> {
    /// Up to (not including) the last `:` or `/`; empty if there is none.
    Text(&'a str),
    /// A decimal key's value with its low 9 bits dropped.
    Number(i64),
}

impl std::fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Prefix::Text(s) => f.write_str(s),
            Prefix::Number(n) => write!(f, "#{n}"),
        }
    }
}

/// The prefix of a key: up to (not including) the last `:` or `/`; for a
/// key made only of decimal digits (block numbers, packed ids), the number
/// with its low 9 bits dropped (a group of 512 neighbours); otherwise the
/// empty prefix. Never allocates.
pub fn prefix_of(key: &str) -> Prefix<'_> {
    if let Some(i) = key.rfind([':', '/']) {
        return Prefix::Text(&key[..i]);
    }
    let digits = key.strip_prefix('-').unwrap_or(key);
    if !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = key.parse::<i64>() {
            return Prefix::Number(n >> 9);
        }
    }
    Prefix::Text("")
}

/// Inputs of [`features`] that do not belong to the key.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// `now` relative to the predictor's base, and in unix seconds.
    pub now_rel: u32,
    pub now_unix: u64,
    /// Seconds ahead the prediction is for.
    pub horizon_secs: u32,
}

fn lift(profile: &[u8], slot: usize) -> f32 {
    let total: u32 = profile.iter().map(|&c| u32::from(c)).sum();
    if total == 0 {
        return 0.0;
    }
    f32::from(profile[slot]) * profile.len() as f32 / total as f32 - 1.0
}

/// The feature vector of a key (see [`FEATURE_NAMES`]).
pub fn features(s: &KeyState, prefix: [f32; 2], ctx: &Context) -> Features {
    let dt = ctx.now_rel.saturating_sub(s.last) as f32;
    let age = ctx.now_rel.saturating_sub(s.first) as f32;
    let mut f = [0.0f32; NUM_FEATURES];
    for i in 0..4 {
        f[i] = ln_1p(decay(s.decayed[i], dt, HALF_LIVES[i]));
    }
    f[4] = ln_1p(dt / 60.0);
    f[5] = ln_1p(s.count as f32);
    f[6] = ln_1p(age / 60.0);
    if s.count >= 2 {
        f[7] = s.gap_mean;
        f[8] = if s.count >= 3 {
            s.gap_var.max(0.0).sqrt()
        } else {
            0.0
        };
        f[9] = ln_1p(dt) - s.gap_mean;
        f[10] = 1.0;
    }
    let target = ctx.now_unix + u64::from(ctx.horizon_secs / 2);
    f[11] = lift(&s.hod, hod_slot(target)) * (age / DAY as f32).min(1.0);
    f[12] = lift(&s.dow, dow_slot(target)) * (age / WEEK as f32).min(1.0);
    f[13] = ln_1p(prefix[0]);
    f[14] = ln_1p(prefix[1]);
    f[15] = ln_1p(ctx.horizon_secs as f32 / 60.0);
    let lived_out = s.expires.saturating_add(ctx.horizon_secs / 2);
    if ctx.now_rel < lived_out {
        f[16] = ln_1p(f32::from(s.value_reads));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-3 * (1.0 + b.abs())
    }

    const U0: u64 = 1_700_000_000;

    fn ctx(now_rel: u32, horizon: u32) -> Context {
        Context {
            now_rel,
            now_unix: U0 + u64::from(now_rel),
            horizon_secs: horizon,
        }
    }

    #[test]
    fn single_access() {
        let s = KeyState::new(100, U0 + 100, 3600);
        let f = features(&s, [0.0, 0.0], &ctx(100 + 300, 600));
        // One access 5 min ago: 5-min count halved, 30-min count 2^(-1/6).
        assert!(close(f[0], 0.5f32.ln_1p()), "{f:?}");
        assert!(close(f[1], 2f32.powf(-1.0 / 6.0).ln_1p()));
        assert!(close(f[4], 5f32.ln_1p()));
        assert!(close(f[5], 1f32.ln_1p()));
        assert!(close(f[6], 5f32.ln_1p()));
        assert_eq!(&f[7..11], &[0.0; 4], "no gaps with one access");
        assert!(
            f[11].abs() < 0.03,
            "hod lift is scaled down by age: {}",
            f[11]
        );
        assert!(close(f[15], 10f32.ln_1p()));
    }

    #[test]
    fn regular_gaps() {
        // Accessed every 60 s, 10 times: counts add up, gap mean = ln(61), std 0.
        let mut s = KeyState::new(0, U0, 3600);
        for i in 1..10u32 {
            s.hit(i * 60, U0 + u64::from(i) * 60);
        }
        assert_eq!(s.count, 10);
        let f = features(&s, [3.0, 7.0], &ctx(540 + 120, 60));
        assert!(close(f[7], 61f32.ln()), "{f:?}");
        assert!(f[8].abs() < 1e-3);
        assert!(close(f[9], 121f32.ln() - 61f32.ln()), "overdue");
        assert_eq!(f[10], 1.0);
        assert!(close(f[13], 3f32.ln_1p()));
        assert!(close(f[14], 7f32.ln_1p()));
        // The 24-h count is almost exactly 10 accesses, decayed for the last 2 min.
        let want24: f32 = (0..10)
            .map(|i| (-((660 - i * 60) as f32) / 86_400.0).exp2())
            .sum();
        assert!(
            close(f[3], want24.ln_1p()),
            "{} vs {}",
            f[3],
            want24.ln_1p()
        );
    }

    /// `ln_value_reads`: reads of the current value, the writing read
    /// included; a read-through miss after expiry starts a new count at 1, a
    /// warm at 0; a value that lived out unread scores 0.
    #[test]
    fn value_reads_count_the_current_values_readers() {
        const TTL: u32 = 3600;
        let reads = |f: &Features| (f[16].exp() - 1.0).round() as u32;
        let mut s = KeyState::new(0, U0, 3600);
        for t in [60u32, 120, 600] {
            s.hit(t, U0 + u64::from(t));
            s.read_through(t, TTL);
        }
        assert_eq!(s.value_reads, 4);
        assert_eq!(reads(&features(&s, [0.0; 2], &ctx(TTL, TTL))), 4);
        // Read after the value expired: a miss writes a new value.
        s.hit(TTL + 10, U0 + u64::from(TTL + 10));
        s.read_through(TTL + 10, TTL);
        assert_eq!(s.expires, 2 * TTL + 10);
        assert_eq!(reads(&features(&s, [0.0; 2], &ctx(TTL + 20, TTL))), 1);
        // A warm writes a value nobody has read yet.
        s.rewritten(TTL + 100, TTL, false);
        assert_eq!(reads(&features(&s, [0.0; 2], &ctx(TTL + 200, TTL))), 0);
        s.hit(TTL + 300, U0 + u64::from(TTL + 300));
        s.read_through(TTL + 300, TTL);
        assert_eq!(reads(&features(&s, [0.0; 2], &ctx(TTL + 400, TTL))), 1);
        // Half a TTL after the warmed value expired unread, it lived out: 0.
        let late = TTL + 100 + TTL * 3 / 2;
        assert_eq!(reads(&features(&s, [0.0; 2], &ctx(late - 1, TTL))), 1);
        assert_eq!(features(&s, [0.0; 2], &ctx(late, TTL))[16], 0.0);
        // Saturates instead of wrapping.
        for t in 0..300u32 {
            s.hit(TTL + 400 + t, U0 + u64::from(TTL + 400 + t));
        }
        assert_eq!(s.value_reads, u8::MAX);
        assert_eq!(std::mem::size_of::<KeyState>(), 56, "the documented size");
    }

    #[test]
    fn irregular_gaps_have_spread() {
        let mut s = KeyState::new(0, U0, 3600);
        for t in [10u32, 1000, 1010, 5000, 5005] {
            s.hit(t, U0 + u64::from(t));
        }
        let f = features(&s, [0.0; 2], &ctx(5005, 60));
        assert!(f[8] > 1.0, "{f:?}");
    }

    #[test]
    fn out_of_order_access_counts_but_keeps_last() {
        let mut s = KeyState::new(1000, U0 + 1000, 3600);
        s.hit(500, U0 + 500);
        assert_eq!((s.first, s.last, s.count), (500, 1000, 2));
    }

    #[test]
    fn daily_profile_lifts_the_usual_hour() {
        // Every day at 08:00-08:10 UTC for 3 days.
        let day0 = U0 / DAY * DAY;
        let base = day0 - DAY;
        let mut s: Option<KeyState> = None;
        for d in 0..3u64 {
            for m in 0..10u64 {
                let unix = day0 + d * DAY + 8 * 3600 + m * 60;
                let rel = (unix - base) as u32;
                match s.as_mut() {
                    None => s = Some(KeyState::new(rel, unix, 3600)),
                    Some(s) => s.hit(rel, unix),
                }
            }
        }
        let s = s.unwrap();
        let at = |unix: u64| Context {
            now_rel: (unix - base) as u32,
            now_unix: unix,
            horizon_secs: 600,
        };
        let morning = features(&s, [0.0; 2], &at(day0 + 3 * DAY + 7 * 3600));
        let evening = features(&s, [0.0; 2], &at(day0 + 3 * DAY + 19 * 3600));
        assert!(
            close(morning[11], 7.0),
            "all accesses in one of 8 slots: {morning:?}"
        );
        assert!(close(evening[11], -1.0), "{evening:?}");
    }

    #[test]
    fn profiles_saturate_by_halving() {
        let mut s = KeyState::new(0, U0, 3600);
        for i in 0..1000 {
            s.hit(i, U0 + u64::from(i));
        }
        let slot = hod_slot(U0);
        assert!(s.hod[slot] > 100, "{:?}", s.hod);
    }

    #[test]
    fn fast_math_is_close() {
        for i in 0..10_000 {
            let x = i as f32 * 0.37;
            assert!((ln_1p(x) - x.ln_1p()).abs() < 1e-4, "ln_1p({x})");
            let y = i as f32 * 0.01;
            let want = (-y).exp2();
            assert!((exp2_neg(y) - want).abs() <= 1e-4 * want, "exp2_neg({y})");
        }
        assert_eq!(exp2_neg(200.0), 0.0);
        assert!(ln_1p(0.0).abs() < 1e-6);
    }

    #[test]
    fn prefixes() {
        let p = |k: &str| prefix_of(k).to_string();
        assert_eq!(p("user:1:profile"), "user:1");
        assert_eq!(p("a/b/c"), "a/b");
        assert_eq!(p("plain"), "");
        assert_eq!(p("511"), "#0");
        assert_eq!(p("1024"), "#2");
        assert_eq!(p("-1"), "#-1");
        assert_eq!(p("12a"), "");
    }

    #[test]
    fn prefix_table_decays() {
        let mut t = PrefixTable::new(16);
        t.hit(5, 0);
        t.hit(5, 0);
        let c = t.counts(5, 300);
        assert!(close(c[0], 1.0) && close(c[1], 2.0 * 2f32.powf(-1.0 / 6.0)));
        assert_eq!(t.counts(6, 300), [0.0, 0.0]);
    }
}

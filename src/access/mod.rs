//! Access history: how often and how recently each key was read, in time
//! buckets, for a bounded number of keys.
//!
//! # Model
//!
//! Time is cut into buckets of width `bucket` (default 15 min), aligned on
//! multiples of `bucket` in unix time. For every tracked key the tracker keeps
//! the access counts of the [`BUCKETS`] (5) most recent buckets, i.e. about
//! 75 min of history, the time of the last access and how many buckets ago
//! the key was first seen. Buckets rotate lazily: a key's counts are shifted
//! when that key is next touched, never by a background task.
//!
//! An access older than the newest bucket of its key lands in its own bucket
//! if that is still kept, and is ignored if it is older than the kept history.
//! Counts saturate at `u32::MAX` per bucket.
//!
//! # Rates ([`KeyStats`])
//!
//! Rates are counts divided by the *observed* span, in whole buckets: from
//! the bucket in which the key was first seen (while tracked) to the bucket
//! of `now`, at most 5 buckets and at least 1. A key first seen 2 min ago
//! with 10 accesses therefore reports 10 / 0.25 h = 40/h with 15-min buckets,
//! not 10 / 1.25 h = 8/h (which would understate a new hot key) nor 10 / 2 min
//! = 300/h (which would inflate a single access absurdly). "Recent" is the
//! newest 2 buckets (the current, partial one included), "historical" the
//! older 3; each is divided by the part of the observed span it covers, so
//! a key accessed at a constant rate reports equal recent and historical
//! rates, and a key with no observed historical part reports 0 there.
//!
//! # Bound, eviction
//!
//! At most `max_keys` keys are tracked, whatever number of distinct keys
//! arrive. The keys are spread over shards by hash; each shard has its share
//! of the cap (so the tracker may start evicting slightly before `len()`
//! reaches `max_keys` when the hash spreads keys unevenly). A shard that is
//! full evicts its coldest ~10% in one sweep before admitting a new key:
//! coldness is the access count decayed by half per bucket of age, ties
//! broken by the older last access. One sweep is O(shard size) and happens
//! once per shard-size/10 new keys, so eviction is amortized O(1) per record.
//! The sweep rebuilds the shard's table, which also clears the tombstones
//! left by removals (which would otherwise make the table grow).
//!
//! # Memory and throughput
//!
//! One entry is 48 bytes: the key as a [`CompactString`] (24 bytes, inline
//! up to 24 bytes of key; longer keys add a heap allocation of their
//! length), 5 x `u32` counts and one `u32` holding the last access (29 bits
//! of seconds since the tracker's base, ~17 years) and the observed span.
//! The base is set by the first access (one history before it, aligned on
//! a bucket) and moved forward, in one pass over all keys with every shard
//! locked, if a later timestamp no longer fits (e.g. when the first access
//! recorded was at time 0): the tracker never stops counting.
//! The tables are hashbrown Swiss tables (1 control byte per bucket, at most
//! 7/8 full, power-of-two sizes); the number of shards (16..=32) is chosen
//! so that each shard's cap just fits a power-of-two table, e.g. 18 shards of
//! 65,536 buckets for 1,000,000 keys: ~58 bytes per key when full, ~64 after
//! an eviction sweep, for keys of at most 24 bytes. Tables grow on demand, so
//! an idle tracker costs almost nothing. `benches/access_tracker.rs` measures
//! both figures: more than 5 million `record` calls per second on one core
//! and well under 100 bytes per tracked key.
//!
//! Each `record` hashes the key once (foldhash), locks one shard
//! ([`parking_lot::Mutex`], uncontended in the common case), and looks the
//! key up by `&str` without allocating; only a new key longer than 24 bytes
//! allocates.
//!
//! # Concurrency
//!
//! All methods take `&self`. [`AccessTracker::for_each`] calls its closure
//! with one shard locked: the closure must not call back into the tracker.

pub mod log;
pub mod topk;

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::Mutex;

use crate::glob::KeyPattern;

/// Buckets of history kept per key.
pub const BUCKETS: usize = 5;
/// The newest buckets that count as "recent".
pub const RECENT_BUCKETS: usize = 2;

/// Bits of the last-access field holding seconds since the base.
const LAST_BITS: u32 = 29;
const LAST_MASK: u32 = (1 << LAST_BITS) - 1;
/// `base` not set yet (no access recorded).
const UNSET: u64 = u64::MAX;

/// What the tracker knows of one key at time `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyStats {
    /// Accesses inside the kept history.
    pub total: u64,
    /// Accesses per hour over the kept history.
    pub accesses_per_hour: f64,
    /// Accesses per hour in the recent part of the history.
    pub recent_per_hour: f64,
    /// Accesses per hour in the older part of the history.
    pub historical_per_hour: f64,
    /// Seconds since the last access.
    pub since_last_access_secs: u64,
}

/// Bounded, sharded access tracker.
pub struct AccessTracker {
    shards: Box<[PaddedShard]>,
    hasher: DefaultHashBuilder,
    /// Bucket width in seconds (>= 1).
    bucket_secs: u32,
    max_keys: usize,
    /// Unix seconds of time 0 for the relative times stored per key; set by
    /// the first `record`, aligned on a bucket, one full history before it.
    base: AtomicU64,
}

/// A shard on its own cache line, so that two threads locking neighbouring
/// shards do not contend on the same line.
#[repr(align(64))]
struct PaddedShard(Mutex<Shard>);

struct Shard {
    table: HashTable<Entry>,
    /// Most keys this shard may hold.
    cap: usize,
    /// Newest relative second recorded in this shard (the shard's "now"
    /// when it evicts).
    latest: u32,
}

struct Entry {
    key: CompactString,
    slot: Slot,
}

/// Per-key history: 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    /// `counts[0]` is the bucket of the last access, `counts[i]` `i` buckets before.
    counts: [u32; BUCKETS],
    /// Bits 0..29: last access, seconds since base. Bits 29..32: observed
    /// span in buckets minus one (0..=4).
    meta: u32,
}

impl Slot {
    fn new(rel: u32) -> Self {
        Slot {
            counts: [1, 0, 0, 0, 0],
            meta: rel & LAST_MASK,
        }
    }

    fn last(self) -> u32 {
        self.meta & LAST_MASK
    }

    /// Buckets from first seen to the newest bucket, inclusive: 1..=5.
    fn span(self) -> u32 {
        (self.meta >> LAST_BITS) + 1
    }

    fn set(&mut self, last: u32, span: u32) {
        let span = span.clamp(1, BUCKETS as u32);
        self.meta = (last & LAST_MASK) | ((span - 1) << LAST_BITS);
    }

    fn hit(&mut self, rel: u32, bucket_secs: u32) {
        let last = self.last();
        let newest = last / bucket_secs;
        let b = rel / bucket_secs;
        if b > newest {
            let d = (b - newest) as usize;
            if d >= BUCKETS {
                self.counts = [0; BUCKETS];
            } else {
                self.counts.rotate_right(d);
                self.counts[..d].fill(0);
            }
            self.counts[0] = 1;
            self.set(rel, self.span().saturating_add(d as u32));
        } else {
            let idx = (newest - b) as usize;
            if idx >= BUCKETS {
                return;
            }
            self.counts[idx] = self.counts[idx].saturating_add(1);
            self.set(last.max(rel), self.span().max(idx as u32 + 1));
        }
    }

    /// Buckets between this key's newest bucket and `now_bucket`.
    fn shift(self, now_bucket: u32, bucket_secs: u32) -> usize {
        now_bucket.saturating_sub(self.last() / bucket_secs) as usize
    }

    /// Eviction score: counts halved per bucket of age, then last access.
    fn warmth(self, now_bucket: u32, bucket_secs: u32) -> (f32, u32) {
        let shift = self.shift(now_bucket, bucket_secs);
        let mut w = 0.0f32;
        for (i, &c) in self.counts.iter().enumerate() {
            let age = i + shift;
            if age < BUCKETS {
                w += c as f32 / (1u32 << age) as f32;
            }
        }
        (w, self.last())
    }

    fn stats(self, now_rel: u32, now_unix: u64, base: u64, bucket_secs: u32) -> KeyStats {
        let shift = self.shift(now_rel / bucket_secs, bucket_secs);
        let span = (self.span() as usize + shift).min(BUCKETS);
        let (mut total, mut recent, mut hist) = (0u64, 0u64, 0u64);
        for (i, &c) in self.counts.iter().enumerate() {
            let age = i + shift;
            if age < RECENT_BUCKETS {
                recent += u64::from(c);
            } else if age < BUCKETS {
                hist += u64::from(c);
            }
        }
        total += recent + hist;
        let bucket_hours = f64::from(bucket_secs) / 3600.0;
        let recent_span = span.min(RECENT_BUCKETS);
        let hist_span = span - recent_span;
        KeyStats {
            total,
            accesses_per_hour: total as f64 / (span as f64 * bucket_hours),
            recent_per_hour: recent as f64 / (recent_span as f64 * bucket_hours),
            historical_per_hour: if hist_span == 0 {
                0.0
            } else {
                hist as f64 / (hist_span as f64 * bucket_hours)
            },
            since_last_access_secs: now_unix.saturating_sub(base + u64::from(self.last())),
        }
    }
}

impl Shard {
    fn new(cap: usize) -> Self {
        Shard {
            table: HashTable::new(),
            cap,
            latest: 0,
        }
    }

    fn record(
        &mut self,
        hash: u64,
        key: &str,
        rel: u32,
        bucket_secs: u32,
        hasher: &DefaultHashBuilder,
    ) {
        self.latest = self.latest.max(rel);
        if let Some(e) = self.table.find_mut(hash, |e| e.key.as_str() == key) {
            e.slot.hit(rel, bucket_secs);
            return;
        }
        // A key older than the kept history of the shard is not worth a slot.
        if (self.latest / bucket_secs).saturating_sub(rel / bucket_secs) as usize >= BUCKETS {
            return;
        }
        if self.table.len() >= self.cap {
            self.evict(bucket_secs, hasher);
        }
        let entry = Entry {
            key: CompactString::from(key),
            slot: Slot::new(rel),
        };
        self.table
            .insert_unique(hash, entry, |e| hasher.hash_one(e.key.as_str()));
    }

    /// Drops the coldest ~10% (at least one key) and rebuilds the table.
    fn evict(&mut self, bucket_secs: u32, hasher: &DefaultHashBuilder) {
        let n = self.table.len();
        if n == 0 {
            return;
        }
        let k = (n / 10).max(1);
        let now_bucket = self.latest / bucket_secs;
        let cmp = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        let mut scores: Vec<(f32, u32)> = self
            .table
            .iter()
            .map(|e| e.slot.warmth(now_bucket, bucket_secs))
            .collect();
        let (_, threshold, _) = scores.select_nth_unstable_by(k - 1, cmp);
        let threshold = *threshold;
        let below = scores.iter().filter(|s| cmp(s, &threshold).is_lt()).count();
        drop(scores);
        // Evict everything colder than the threshold and as many ties as needed.
        let mut ties = k - below;
        let old = std::mem::replace(&mut self.table, HashTable::with_capacity(self.cap));
        for e in old {
            match cmp(&e.slot.warmth(now_bucket, bucket_secs), &threshold) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal if ties > 0 => {
                    ties -= 1;
                    continue;
                }
                _ => {}
            }
            let hash = hasher.hash_one(e.key.as_str());
            self.table
                .insert_unique(hash, e, |e| hasher.hash_one(e.key.as_str()));
        }
    }
}

/// Shard count and per-shard caps: one shard below 4096 keys (exact cap),
/// else the count in 16..=32 whose tables waste the least memory.
fn layout(max_keys: usize) -> Vec<usize> {
    let caps = |n: usize| -> Vec<usize> {
        (0..n)
            .map(|i| max_keys / n + usize::from(i < max_keys % n))
            .collect()
    };
    if max_keys < 4096 {
        return caps(1);
    }
    let buckets = |cap: usize| (cap * 8).div_ceil(7).next_power_of_two();
    let best = (16..=32)
        .min_by_key(|&n| caps(n).iter().map(|&c| buckets(c)).sum::<usize>())
        .unwrap_or(16);
    caps(best)
}

impl AccessTracker {
    /// A tracker of at most `max_keys` keys (0 tracks nothing) with buckets of
    /// width `bucket` (rounded to whole seconds, at least 1 s).
    pub fn new(max_keys: usize, bucket: Duration) -> Self {
        let bucket_secs = bucket.as_secs().clamp(1, u64::from(u32::MAX) / 8) as u32;
        let shards = layout(max_keys)
            .into_iter()
            .map(|cap| PaddedShard(Mutex::new(Shard::new(cap))))
            .collect();
        AccessTracker {
            shards,
            hasher: DefaultHashBuilder::default(),
            bucket_secs,
            max_keys,
            base: AtomicU64::new(UNSET),
        }
    }

    /// The hard cap on tracked keys.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Width of one bucket.
    pub fn bucket(&self) -> Duration {
        Duration::from_secs(u64::from(self.bucket_secs))
    }

    /// The whole kept history (`BUCKETS` x bucket).
    pub fn history(&self) -> Duration {
        self.bucket() * BUCKETS as u32
    }

    fn history_secs(&self) -> u64 {
        u64::from(self.bucket_secs) * BUCKETS as u64
    }

    /// The base a tracker whose newest access is `at` would choose: one full
    /// history before `at`, aligned on a bucket.
    fn base_before(&self, at: u64) -> u64 {
        let bs = u64::from(self.bucket_secs);
        at.saturating_sub(self.history_secs()) / bs * bs
    }

    /// The base, set from `at` if no access was recorded yet.
    fn base_for(&self, at: u64) -> u64 {
        let base = self.base.load(Ordering::Relaxed);
        if base != UNSET {
            return base;
        }
        let candidate = self.base_before(at);
        match self
            .base
            .compare_exchange(UNSET, candidate, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => candidate,
            Err(actual) => actual,
        }
    }

    /// `now` as seconds since base (clamped to the stored range).
    fn rel(&self, base: u64, at: u64) -> u32 {
        at.saturating_sub(base).min(u64::from(LAST_MASK)) as u32
    }

    fn shard_of(&self, hash: u64) -> &Mutex<Shard> {
        // Bits 24..56: the Swiss table uses the low bits (bucket index) and
        // the top 7 (tag), so the shard choice stays independent of both.
        let idx = (((hash >> 24) & 0xFFFF_FFFF) * self.shards.len() as u64) >> 32;
        &self.shards[idx as usize].0
    }

    /// Records one access of `key` at `at_unix_secs`.
    pub fn record(&self, key: &str, at_unix_secs: u64) {
        if self.max_keys == 0 {
            return;
        }
        let hash = self.hasher.hash_one(key);
        let mutex = self.shard_of(hash);
        let mut shard = mutex.lock();
        // The base is read with the shard locked: a rebase holds every lock.
        let mut base = self.base_for(at_unix_secs);
        if at_unix_secs.saturating_sub(base) > u64::from(LAST_MASK) {
            drop(shard);
            self.rebase(at_unix_secs);
            shard = mutex.lock();
            base = self.base.load(Ordering::Relaxed);
        }
        if at_unix_secs < base {
            return;
        }
        let rel = self.rel(base, at_unix_secs);
        shard.record(hash, key, rel, self.bucket_secs, &self.hasher);
    }

    /// Moves the base forward so that `at` fits the 29-bit relative times
    /// again (after ~17 years of timestamps, or when the very first access
    /// recorded was very old, e.g. `at = 0`). Every shard is locked; stored
    /// times are shifted; keys whose last access falls before the new base
    /// are outside the history anyway and keep zero counts.
    #[cold]
    fn rebase(&self, at: u64) {
        let mut guards: Vec<_> = self.shards.iter().map(|s| s.0.lock()).collect();
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET || at.saturating_sub(base) <= u64::from(LAST_MASK) {
            return; // done by another thread meanwhile
        }
        let new_base = self.base_before(at);
        let delta = new_base - base;
        for g in guards.iter_mut() {
            g.latest = u64::from(g.latest).saturating_sub(delta) as u32;
            for e in g.table.iter_mut() {
                let last = u64::from(e.slot.last());
                if last >= delta {
                    e.slot.set((last - delta) as u32, e.slot.span());
                } else {
                    e.slot = Slot {
                        counts: [0; BUCKETS],
                        meta: 0,
                    };
                }
            }
        }
        self.base.store(new_base, Ordering::Relaxed);
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated by the tracker's tables and long keys (not counting
    /// the fixed-size struct itself).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.0.lock();
                let keys: usize = s
                    .table
                    .iter()
                    .filter(|e| e.key.is_heap_allocated())
                    .map(|e| e.key.capacity())
                    .sum();
                s.table.allocation_size() + keys
            })
            .sum::<usize>()
            + std::mem::size_of_val(&*self.shards)
    }

    /// The newest access time recorded (unix seconds), if any.
    pub fn latest_unix_secs(&self) -> Option<u64> {
        self.shards
            .iter()
            .filter_map(|s| {
                let s = s.0.lock();
                let base = self.base.load(Ordering::Relaxed);
                (base != UNSET).then(|| base + u64::from(s.latest))
            })
            .max()
    }

    pub fn stats(&self, key: &str, now_unix_secs: u64) -> Option<KeyStats> {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard_of(hash).lock();
        let base = self.base.load(Ordering::Relaxed);
        if base == UNSET {
            return None;
        }
        let now_rel = self.rel(base, now_unix_secs);
        let e = shard.table.find(hash, |e| e.key.as_str() == key)?;
        Some(e.slot.stats(now_rel, now_unix_secs, base, self.bucket_secs))
    }

    /// Calls `f` for every tracked key, one shard locked at a time (`f` must
    /// not call back into the tracker). Order is unspecified.
    pub fn for_each(&self, now_unix_secs: u64, f: &mut dyn FnMut(&str, &KeyStats)) {
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            let base = self.base.load(Ordering::Relaxed);
            if base == UNSET {
                return;
            }
            let now_rel = self.rel(base, now_unix_secs);
            for e in shard.table.iter() {
                let st = e.slot.stats(now_rel, now_unix_secs, base, self.bucket_secs);
                f(e.key.as_str(), &st);
            }
        }
    }

    /// Up to `limit` tracked keys matching `pattern`, hottest first: by
    /// access count decayed by half per bucket of age at the newest recorded
    /// time, ties by key. O(n log limit) over the tracked keys.
    pub fn keys_matching(&self, pattern: &KeyPattern, limit: usize) -> Vec<String> {
        if limit == 0 {
            return Vec::new();
        }
        let Some(latest) = self.latest_unix_secs() else {
            return Vec::new();
        };
        if let Some(key) = pattern.as_literal() {
            let hash = self.hasher.hash_one(key);
            let shard = self.shard_of(hash).lock();
            return shard
                .table
                .find(hash, |e| e.key.as_str() == key)
                .map(|e| vec![e.key.to_string()])
                .unwrap_or_default();
        }
        let mut top = topk::TopK::new(limit);
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            let base = self.base.load(Ordering::Relaxed);
            let now_bucket = self.rel(base, latest) / self.bucket_secs;
            for e in shard.table.iter() {
                if pattern.is_match(&e.key) {
                    top.offer(
                        f64::from(e.slot.warmth(now_bucket, self.bucket_secs).0),
                        &e.key,
                    );
                }
            }
        }
        top.into_sorted().into_iter().map(|(k, _)| k).collect()
    }
}

impl std::fmt::Debug for AccessTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTracker")
            .field("max_keys", &self.max_keys)
            .field("bucket_secs", &self.bucket_secs)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 900; // 15 min
    /// A bucket-aligned start time far from 0.
    const T0: u64 = 1_700_000_100 / B * B;

    fn tracker(max: usize) -> AccessTracker {
        AccessTracker::new(max, Duration::from_secs(B))
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn slot_is_24_bytes_entry_48() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn new_key_rate_uses_one_bucket() {
        let t = tracker(100);
        for _ in 0..10 {
            t.record("k", T0 + 60);
        }
        let s = t.stats("k", T0 + 120).unwrap();
        assert_eq!(s.total, 10);
        // Observed span 1 bucket (0.25 h): 40/h, all of it recent.
        assert!(close(s.accesses_per_hour, 40.0), "{s:?}");
        assert!(close(s.recent_per_hour, 40.0));
        assert_eq!(s.historical_per_hour, 0.0);
        assert_eq!(s.since_last_access_secs, 60);
        assert_eq!(t.len(), 1);
        assert!(t.stats("other", T0).is_none());
    }

    #[test]
    fn constant_rate_gives_equal_recent_and_historical() {
        let t = tracker(100);
        for b in 0..5 {
            for _ in 0..3 {
                t.record("k", T0 + b * B + 1);
            }
        }
        let s = t.stats("k", T0 + 4 * B + 10).unwrap();
        assert_eq!(s.total, 15);
        assert!(close(s.accesses_per_hour, 12.0), "{s:?}"); // 15 / 1.25 h
        assert!(close(s.recent_per_hour, 12.0)); // 6 / 0.5 h
        assert!(close(s.historical_per_hour, 12.0)); // 9 / 0.75 h
    }

    #[test]
    fn history_ages_out() {
        let t = tracker(100);
        t.record("k", T0);
        t.record("k", T0 + 2 * B);
        // 3 buckets later the first access (bucket 0) is at age 5: gone.
        let s = t.stats("k", T0 + 5 * B).unwrap();
        assert_eq!(s.total, 1);
        assert!(close(s.accesses_per_hour, 1.0 / 1.25));
        assert_eq!(s.recent_per_hour, 0.0);
        assert!(close(s.historical_per_hour, 1.0 / 0.75));
        let s = t.stats("k", T0 + 10 * B).unwrap();
        assert_eq!(s.total, 0);
        assert_eq!(s.accesses_per_hour, 0.0);
        assert_eq!(s.since_last_access_secs, 8 * B);
        // Recording again after a long gap restarts the counts.
        t.record("k", T0 + 10 * B);
        assert_eq!(t.stats("k", T0 + 10 * B).unwrap().total, 1);
    }

    #[test]
    fn out_of_order_lands_in_its_bucket_or_is_ignored() {
        let t = tracker(100);
        t.record("k", T0 + 6 * B);
        t.record("k", T0 + 4 * B); // 2 buckets older: kept as historical
        t.record("k", T0 + B); // 5 buckets older: ignored
        let s = t.stats("k", T0 + 6 * B).unwrap();
        assert_eq!(s.total, 2);
        assert!(close(s.historical_per_hour, 1.0 / 0.25)); // span 3: hist part 1 bucket
        assert_eq!(s.since_last_access_secs, 0);
        // Older than the tracker's base: ignored, even for a new key.
        t.record("old", T0 - 10 * B);
        assert!(t.stats("old", T0).is_none());
    }

    #[test]
    fn out_of_order_new_key_older_than_history_is_not_admitted() {
        let t = tracker(100);
        t.record("a", T0);
        t.record("a", T0 + 20 * B);
        t.record("stale", T0 + 5 * B);
        assert!(t.stats("stale", T0 + 20 * B).is_none());
    }

    #[test]
    fn cap_is_hard_and_hot_keys_survive() {
        let t = tracker(1000);
        for _ in 0..50 {
            t.record("hot", T0);
        }
        for i in 0..100_000 {
            t.record(&format!("cold:{i}"), T0 + 1);
            assert!(t.len() <= 1000);
        }
        assert!(t.stats("hot", T0 + 2).is_some(), "hot key evicted");
        assert!(t.len() >= 900, "len {}", t.len());
    }

    #[test]
    fn sharded_cap_holds_for_large_trackers() {
        let t = tracker(20_000);
        assert!(t.shards.len() >= 16);
        for i in 0..200_000u64 {
            t.record(&format!("user:{i}:profile"), T0 + i / 1000);
        }
        assert!(t.len() <= 20_000);
        assert!(t.len() >= 17_000, "len {}", t.len());
        // Recent keys are the warm ones: the last one is kept.
        assert!(t.stats("user:199999:profile", T0 + 200).is_some());
        let per_key = t.heap_bytes() as f64 / t.len() as f64;
        assert!(per_key < 100.0, "{per_key} bytes/key");
    }

    #[test]
    fn layout_fits_power_of_two_tables() {
        let caps = layout(1_000_000);
        assert_eq!(caps.iter().sum::<usize>(), 1_000_000);
        assert_eq!(caps.len(), 18);
        assert_eq!(layout(10), vec![10]);
        assert_eq!(layout(0), vec![0]);
    }

    #[test]
    fn very_old_first_access_does_not_break_the_clock() {
        let t = tracker(100);
        t.record("ancient", 0);
        t.record("ancient2", 5);
        t.record("k", T0);
        t.record("k", T0 + B);
        t.record("ancient", T0 + B + 10);
        let s = t.stats("k", T0 + B + 20).unwrap();
        assert_eq!(s.total, 2);
        assert_eq!(s.since_last_access_secs, 20);
        assert!(close(s.accesses_per_hour, 2.0 / 0.5), "{s:?}");
        let a = t.stats("ancient", T0 + B + 20).unwrap();
        assert_eq!(a.total, 1);
        assert_eq!(a.since_last_access_secs, 10);
        assert_eq!(t.stats("ancient2", T0).unwrap().total, 0);
        assert_eq!(t.latest_unix_secs(), Some(T0 + B + 10));
        // Years later, still exact.
        let later = T0 + (1 << 30);
        t.record("k", later);
        assert_eq!(t.stats("k", later).unwrap().total, 1);
        assert_eq!(t.stats("k", later + 7).unwrap().since_last_access_secs, 7);
    }

    proptest::proptest! {
        /// In-order accesses against a naive model that keeps every timestamp.
        #[test]
        fn stats_match_a_naive_model(
            steps in proptest::collection::vec((0usize..4, 0u64..400), 1..200),
            extra in 0u64..2000,
        ) {
            const BS: u64 = 300;
            let t = AccessTracker::new(100, Duration::from_secs(BS));
            let names = ["a", "b", "c", "d"];
            let mut times: Vec<Vec<u64>> = vec![Vec::new(); 4];
            let mut at = T0 + 17;
            for (k, dt) in &steps {
                at += dt;
                t.record(names[*k], at);
                times[*k].push(at);
            }
            let now = at + extra;
            let now_b = now / BS;
            for (k, ts) in times.iter().enumerate() {
                let Some(s) = t.stats(names[k], now) else {
                    proptest::prop_assert!(ts.is_empty());
                    continue;
                };
                let age = |x: &u64| now_b - x / BS;
                let total = ts.iter().filter(|x| age(x) < 5).count() as f64;
                let recent = ts.iter().filter(|x| age(x) < 2).count() as f64;
                let span = (age(&ts[0]) + 1).min(5) as f64;
                let h = BS as f64 / 3600.0;
                proptest::prop_assert_eq!(s.total as f64, total);
                proptest::prop_assert!(close(s.accesses_per_hour, total / (span * h)));
                proptest::prop_assert!(close(s.recent_per_hour, recent / (span.min(2.0) * h)));
                let hist_span = span - span.min(2.0);
                let hist = if hist_span == 0.0 { 0.0 } else { (total - recent) / (hist_span * h) };
                proptest::prop_assert!(close(s.historical_per_hour, hist));
                proptest::prop_assert_eq!(s.since_last_access_secs, now - ts.last().unwrap());
            }
        }
    }

    #[test]
    fn zero_cap_tracks_nothing() {
        let t = tracker(0);
        t.record("k", T0);
        assert!(t.is_empty());
        assert!(t.stats("k", T0).is_none());
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut s = Slot::new(0);
        s.counts[0] = u32::MAX;
        s.hit(1, 900);
        assert_eq!(s.counts[0], u32::MAX);
    }

    #[test]
    fn for_each_and_keys_matching() {
        let t = tracker(100);
        for (k, n) in [
            ("user:1:a", 5),
            ("user:2:a", 9),
            ("user:3:a", 1),
            ("post:1", 7),
        ] {
            for _ in 0..n {
                t.record(k, T0);
            }
        }
        let mut seen = Vec::new();
        t.for_each(T0, &mut |k, s| seen.push((k.to_string(), s.total)));
        seen.sort();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], ("post:1".to_string(), 7));
        let pat = KeyPattern::parse("user:*").unwrap();
        assert_eq!(t.keys_matching(&pat, 2), ["user:2:a", "user:1:a"]);
        assert_eq!(t.keys_matching(&pat, 10).len(), 3);
        assert!(t.keys_matching(&pat, 0).is_empty());
        let lit = KeyPattern::parse("post:1").unwrap();
        assert_eq!(t.keys_matching(&lit, 5), ["post:1"]);
        let none = KeyPattern::parse("nope").unwrap();
        assert!(t.keys_matching(&none, 5).is_empty());
    }

    #[test]
    fn long_keys_are_supported() {
        let t = tracker(10);
        let k = "x".repeat(300);
        t.record(&k, T0);
        assert_eq!(t.stats(&k, T0).unwrap().total, 1);
        assert!(t.heap_bytes() >= 300);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let t = std::sync::Arc::new(tracker(10_000));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        t.record(&format!("k{}", i % 100), T0);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let mut sum = 0;
        t.for_each(T0, &mut |_, s| sum += s.total);
        assert_eq!(sum, 40_000);
        assert_eq!(t.len(), 100);
    }
}

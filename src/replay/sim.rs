//! The simulated cache and origin one mode replays against, and the figures
//! it counts.
//!
//! # Cache
//!
//! Bounded by entries or by bytes ([`Capacity`]), one TTL per value, and
//! **LRU** eviction, as the embedded cache (moka built with its LRU policy).
//! With `SimConfig::admission`, a TinyLFU **admission filter** sits in front
//! of the LRU, as in caches built with moka's or Caffeine's default policy:
//! every read counts in a sketch of recent reads ([`super::sketch`]); a new
//! value that needs room displaces the least recently used values only if
//! its key was read more often than theirs together (an expired value
//! counts as never read), else it is not stored (`admissions_rejected`; the
//! reader still gets it, a warm's fetch is spent and counted wasted).
//! Values replaced in place (a refresh, a re-fetch after expiry) keep their
//! place. Expired values stay until read or evicted.
//!
//! A fetch (demand or warming) issued at `t` delivers its value at
//! `t + latency`; the value then lives `ttl`. While a refresh is in flight the
//! previous value is still served until its own expiry. A read finding
//! neither a servable value nor a finished fetch is a miss, classified as:
//! - **cold**: the first access ever to the key;
//! - **in flight**: a fetch for the key is under way (the reader waits for
//!   it: read-through coalesces, so no second origin request is sent);
//! - **expired**: the key's last value had expired;
//! - **evicted**: the key's last value was evicted before it expired.
//!
//! A **stampede** is counted once per demand fetch that two or more misses
//! wait on (the issue's "two or more concurrent misses on the same key within
//! one origin latency"); the 2nd..nth misses are the in-flight misses.
//!
//! # Origin
//!
//! Every fetch takes `latency` seconds. The budget is a token bucket of
//! `rps` tokens per second holding at most one (a burst of one), the shape
//! of the service's GCRA limiter: warming fetches are spaced at least
//! `1/rps` apart. Demand fetches are never refused (a reader is waiting)
//! but take their token, down to a debt of one second of budget; warming
//! fetches wait until a whole token is there. So warming only ever uses the
//! budget that demand leaves. `rps = 0` means unlimited.
//!
//! # Memory
//!
//! Besides the cache's own entries, each simulation remembers every key it
//! has seen (its last value's expiry and size, whether it was read) so that
//! a miss can be told cold, expired or evicted, at most
//! `SimConfig::max_remembered` keys of them (`--tracker-max-keys`): past
//! that, the keys first remembered longest ago that are no longer cached
//! are forgotten (`Stats::keys_forgotten`), and a later miss of one counts
//! as cold. So a trace of any number of distinct keys replays in bounded
//! memory.
//!
//! A **wasted warm** is a value fetched by warming that no read was served
//! from before it expired, was evicted or was replaced; values still live at
//! the end of the trace are not counted.

use std::collections::{BinaryHeap, HashSet, VecDeque};

use super::sketch::FrequencySketch;
use std::hash::{BuildHasherDefault, Hasher};

use hashbrown::HashMap;
use serde::Serialize;

/// Mixes a `u64` id (the ids are already hashes or plain numbers).
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        // Folded 128-bit multiply: every input bit reaches the high and low bits.
        let m = u128::from(x ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// A map keyed by id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A set of ids.
pub type IdSet = HashSet<u64, BuildHasherDefault<IdHasher>>;

/// Cache capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    Entries(u64),
    Bytes(u64),
}

impl Capacity {
    /// `10000` (entries), `64MiB`, `1GB`, `500kB`, `4096B` (bytes).
    pub fn parse(s: &str) -> Result<Capacity, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("cache size {s:?}: expected a number, e.g. 100000 or 64MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" => return Ok(Capacity::Entries(n)),
            "b" => 1,
            "kb" => 1_000,
            "kib" => 1 << 10,
            "mb" => 1_000_000,
            "mib" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("cache size {s:?}: unknown unit {other:?}")),
        };
        Ok(Capacity::Bytes(n.saturating_mul(mult)))
    }
}

/// What one mode counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub requests: u64,
    pub hits: u64,
    pub hit_ratio: f64,
    pub misses: u64,
    pub misses_cold: u64,
    pub misses_expired: u64,
    pub misses_evicted: u64,
    pub misses_in_flight: u64,
    pub origin_fetches_demand: u64,
    pub origin_fetches_warming: u64,
    /// All origin fetches / hits.
    pub origin_fetches_per_hit: f64,
    pub wasted_warms: u64,
    /// Warmed values that served at least one read.
    pub useful_warms: u64,
    /// Most origin fetches started in one second of trace time.
    pub peak_origin_rps: u64,
    pub stampedes: u64,
    /// Warming fetches given up (the oracle's, when the budget made them too late).
    pub warms_dropped: u64,
    /// New values the admission filter did not store (their key was read
    /// less often than the values they would have displaced).
    pub admissions_rejected: u64,
    /// Keys forgotten to keep the simulation's memory of keys within its
    /// cap (`--tracker-max-keys`); a later miss of one counts as cold.
    pub keys_forgotten: u64,
}

impl Stats {
    fn finish(&mut self) {
        self.misses =
            self.misses_cold + self.misses_expired + self.misses_evicted + self.misses_in_flight;
        self.hit_ratio = ratio(self.hits, self.requests);
        self.origin_fetches_per_hit = ratio(
            self.origin_fetches_demand + self.origin_fetches_warming,
            self.hits,
        );
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Hit ratio and origin load over trace time, in buckets whose width doubles
/// (merging pairs) whenever more than [`Series::MAX_POINTS`] would be needed,
/// so a trace of any length costs the same.
#[derive(Debug, Clone, Default)]
pub struct Series {
    start: Option<f64>,
    pub width: f64,
    /// Per bucket: (requests, hits, origin fetches).
    pub buckets: Vec<(u64, u64, u64)>,
}

impl Series {
    pub const MAX_POINTS: usize = 400;

    fn slot(&mut self, t: f64) -> usize {
        let start = *self.start.get_or_insert(t);
        if self.width == 0.0 {
            self.width = 1.0;
        }
        let mut i = ((t - start).max(0.0) / self.width) as usize;
        while i >= Self::MAX_POINTS {
            let merged: Vec<_> = self
                .buckets
                .chunks(2)
                .map(|c| {
                    c.iter()
                        .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
                })
                .collect();
            self.buckets = merged;
            self.width *= 2.0;
            i = ((t - start).max(0.0) / self.width) as usize;
        }
        if self.buckets.len() <= i {
            self.buckets.resize(i + 1, (0, 0, 0));
        }
        i
    }

    fn request(&mut self, t: f64, hit: bool) {
        let i = self.slot(t);
        self.buckets[i].0 += 1;
        self.buckets[i].1 += u64::from(hit);
    }

    fn fetch(&mut self, t: f64) {
        let i = self.slot(t);
        self.buckets[i].2 += 1;
    }

    /// Trace start (seconds) of the series.
    pub fn start(&self) -> f64 {
        self.start.unwrap_or(0.0)
    }
}

/// What [`Sim::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inserted {
    Stored,
    /// Larger than the whole cache.
    TooBig,
    /// Refused by the admission filter.
    Rejected,
}

/// Most tokens the budget holds: the service's limiter allows a burst of one.
const BURST: f64 = 1.0;

/// Origin budget: a token bucket (see the module doc).
#[derive(Debug, Clone)]
pub struct Budget {
    rate: f64,
    tokens: f64,
    last: f64,
}

impl Budget {
    pub fn new(rps: f64) -> Self {
        Budget {
            rate: rps.max(0.0),
            tokens: BURST,
            last: f64::NEG_INFINITY,
        }
    }

    fn refill(&mut self, t: f64) {
        if self.last == f64::NEG_INFINITY {
            self.last = t;
        }
        if t > self.last {
            self.tokens = (self.tokens + (t - self.last) * self.rate).min(BURST);
            self.last = t;
        }
    }

    fn demand(&mut self, t: f64) {
        if self.rate > 0.0 {
            self.refill(t);
            self.tokens = (self.tokens - 1.0).max(-self.rate);
        }
    }

    /// Earliest time at or after `t` a warming fetch may start.
    pub fn ready_at(&mut self, t: f64) -> f64 {
        if self.rate <= 0.0 {
            return t;
        }
        self.refill(t);
        if self.tokens >= 1.0 {
            t
        } else {
            t + (1.0 - self.tokens) / self.rate
        }
    }

    fn take(&mut self, t: f64) {
        if self.rate > 0.0 {
            self.refill(t);
            self.tokens -= 1.0;
        }
    }
}

const NIL: u32 = u32::MAX;
const WARMED: u8 = 1;
const DEMAND: u8 = 2;
const STAMPEDE: u8 = 4;

#[derive(Debug, Clone)]
struct Node {
    id: u64,
    size: u32,
    flags: u8,
    /// When the newest fetch delivers (its value is served from then on).
    ready_at: f64,
    /// Expiry of the newest value.
    expires_at: f64,
    /// Expiry of the value served while a refresh is in flight.
    prev_expires: f64,
    prev: u32,
    next: u32,
}

/// What the simulation remembers of every key it has seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Expiry of the key's last fetched value (`-inf`: never fetched).
    expires_at: f64,
    size: u32,
    accessed: bool,
}

/// How a read went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Cold,
    InFlight,
    Expired,
    Evicted,
}

/// The state of a key's cached value at some time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cached {
    /// When the newest value is (or was) written.
    pub written_at: f64,
    pub expires_at: f64,
    /// A fetch is under way.
    pub in_flight: bool,
}

/// Simulation parameters shared by every mode.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub capacity: Capacity,
    /// Default TTL, seconds.
    pub ttl: f64,
    /// Origin latency per fetch, seconds.
    pub latency: f64,
    /// Origin budget, fetches per second (0: unlimited).
    pub rps: f64,
    /// TinyLFU admission in front of the LRU (moka's and Caffeine's default
    /// policy); false: plain LRU, as the embedded cache.
    pub admission: bool,
    /// Most keys remembered (see [`Sim`]): beyond it the keys first
    /// remembered longest ago and no longer cached are forgotten.
    pub max_remembered: usize,
}

/// One mode's cache + origin + counters.
pub struct Sim {
    pub cfg: SimConfig,
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: IdMap<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    used: u64,
    seen: IdMap<Seen>,
    /// Keys of `seen` in the order they were first remembered, to forget
    /// the oldest once `max_remembered` is reached.
    remembered: VecDeque<u64>,
    /// The TTL the trace last gave a key's values, for keys whose TTL is
    /// not the configured one (traces with a TTL column only); warms write
    /// with it too, as the service's warms take the origin's `max-age`.
    own_ttl: IdMap<f32>,
    /// Recent reads, for admission (`None`: plain LRU).
    sketch: Option<FrequencySketch>,
    pub budget: Budget,
    pub stats: Stats,
    pub series: Series,
    second: i64,
    in_second: u64,
    /// Latest time the simulation has reached.
    pub now: f64,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Self {
        let sketch = cfg.admission.then(|| {
            FrequencySketch::new(match cfg.capacity {
                Capacity::Entries(n) => n,
                // Values of about 1 KiB.
                Capacity::Bytes(b) => b / 1024,
            })
        });
        Sim {
            budget: Budget::new(cfg.rps),
            cfg,
            nodes: Vec::new(),
            free: Vec::new(),
            index: IdMap::default(),
            head: NIL,
            tail: NIL,
            used: 0,
            seen: IdMap::default(),
            remembered: VecDeque::new(),
            own_ttl: IdMap::default(),
            sketch,
            stats: Stats::default(),
            series: Series::default(),
            second: i64::MIN,
            in_second: 0,
            now: f64::NEG_INFINITY,
        }
    }

    fn cost(&self, size: u32) -> u64 {
        match self.cfg.capacity {
            Capacity::Entries(_) => 1,
            Capacity::Bytes(_) => u64::from(size),
        }
    }

    fn limit(&self) -> u64 {
        match self.cfg.capacity {
            Capacity::Entries(n) | Capacity::Bytes(n) => n,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let e = &self.nodes[i as usize];
            (e.prev, e.next)
        };
        if p == NIL {
            self.head = n;
        } else {
            self.nodes[p as usize].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.nodes[n as usize].prev = p;
        }
    }

    fn push_front(&mut self, i: u32) {
        let h = self.head;
        {
            let e = &mut self.nodes[i as usize];
            e.prev = NIL;
            e.next = h;
        }
        if h != NIL {
            self.nodes[h as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    /// Removes node `i`, counting a wasted warm if its value was never read.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let e = &self.nodes[i as usize];
        if e.flags & WARMED != 0 {
            self.stats.wasted_warms += 1;
        }
        let (id, size) = (e.id, e.size);
        self.used -= self.cost(size);
        self.index.remove(&id);
        self.free.push(i);
    }

    fn evict_for(&mut self, cost: u64) {
        let limit = self.limit();
        while self.used + cost > limit && self.tail != NIL {
            let t = self.tail;
            self.remove(t);
        }
    }

    /// TinyLFU admission of a new value of `id` costing `cost`: when the
    /// cache lacks room, the least recently used values that would make it
    /// are the victims, and the candidate is admitted only if its key was
    /// read more often than theirs together (an expired or never-read
    /// value counts 0).
    fn admit(&self, id: u64, cost: u64) -> bool {
        let Some(sketch) = &self.sketch else {
            return true;
        };
        let need = (self.used + cost).saturating_sub(self.limit());
        if need == 0 {
            return true;
        }
        let candidate = u32::from(sketch.frequency(id));
        let (mut freed, mut victims) = (0u64, 0u32);
        let mut i = self.tail;
        while freed < need && i != NIL {
            let e = &self.nodes[i as usize];
            freed += self.cost(e.size);
            let lived_out = self.now >= e.ready_at && self.now >= e.expires_at.max(e.prev_expires);
            if !lived_out {
                victims += u32::from(sketch.frequency(e.id));
                if victims >= candidate {
                    return false;
                }
            }
            i = e.prev;
        }
        freed >= need && candidate > victims
    }

    /// Inserts a new node (the key must be absent) if it fits and the
    /// admission filter takes it.
    fn insert(&mut self, node: Node) -> Inserted {
        let cost = self.cost(node.size);
        if cost > self.limit() {
            return Inserted::TooBig;
        }
        if !self.admit(node.id, cost) {
            self.stats.admissions_rejected += 1;
            return Inserted::Rejected;
        }
        self.evict_for(cost);
        let id = node.id;
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.used += cost;
        self.index.insert(id, i);
        self.push_front(i);
        Inserted::Stored
    }

    fn count_fetch(&mut self, t: f64) {
        let s = t.floor() as i64;
        if s != self.second {
            self.second = s;
            self.in_second = 0;
        }
        self.in_second += 1;
        self.stats.peak_origin_rps = self.stats.peak_origin_rps.max(self.in_second);
        self.series.fetch(t);
    }

    fn ttl_of(&self, ttl: Option<f64>) -> f64 {
        ttl.filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(self.cfg.ttl)
    }

    /// A read of `id` at `t`. On a miss a demand fetch is issued (or joined).
    pub fn access(&mut self, t: f64, id: u64, size: u32, ttl: Option<f64>) -> Outcome {
        self.now = self.now.max(t);
        self.stats.requests += 1;
        if let Some(sketch) = &mut self.sketch {
            sketch.increment(id);
        }
        let outcome = self.lookup(t, id, size, ttl);
        let hit = outcome == Outcome::Hit;
        self.series.request(t, hit);
        match outcome {
            Outcome::Hit => self.stats.hits += 1,
            Outcome::Cold => self.stats.misses_cold += 1,
            Outcome::InFlight => self.stats.misses_in_flight += 1,
            Outcome::Expired => self.stats.misses_expired += 1,
            Outcome::Evicted => self.stats.misses_evicted += 1,
        }
        outcome
    }

    fn lookup(&mut self, t: f64, id: u64, size: u32, ttl: Option<f64>) -> Outcome {
        let ttl = self.ttl_of(ttl);
        if ttl != self.cfg.ttl {
            self.own_ttl.insert(id, ttl as f32);
        } else if !self.own_ttl.is_empty() {
            self.own_ttl.remove(&id);
        }
        let latency = self.cfg.latency;
        if let Some(&i) = self.index.get(&id) {
            let e = &mut self.nodes[i as usize];
            if t >= e.ready_at && t < e.expires_at {
                if e.flags & WARMED != 0 {
                    e.flags &= !WARMED;
                    self.stats.useful_warms += 1;
                }
                self.touch(i);
                return Outcome::Hit;
            }
            if t < e.prev_expires {
                self.touch(i);
                return Outcome::Hit;
            }
            if t < e.ready_at {
                if e.flags & (DEMAND | STAMPEDE) == DEMAND {
                    e.flags |= STAMPEDE;
                    self.stats.stampedes += 1;
                }
                self.touch(i);
                return Outcome::InFlight;
            }
            // Expired: fetch again in place (cold if only warming fetched it).
            let cold = !self.seen.get(&id).is_some_and(|s| s.accessed);
            let wasted = e.flags & WARMED != 0;
            e.flags = DEMAND;
            e.ready_at = t + latency;
            e.expires_at = t + latency + ttl;
            e.prev_expires = f64::NEG_INFINITY;
            let old = e.size;
            e.size = size;
            let expires = e.expires_at;
            if wasted {
                self.stats.wasted_warms += 1;
            }
            self.used = self.used - self.cost(old) + self.cost(size);
            self.touch(i);
            self.demand_fetch(t);
            self.remember(
                id,
                Seen {
                    expires_at: expires,
                    size,
                    accessed: true,
                },
            );
            self.evict_for(0);
            return if cold {
                Outcome::Cold
            } else {
                Outcome::Expired
            };
        }
        let outcome = match self.seen.get(&id) {
            Some(s) if s.accessed => {
                if s.expires_at <= t {
                    Outcome::Expired
                } else {
                    Outcome::Evicted
                }
            }
            _ => Outcome::Cold,
        };
        let expires = t + latency + ttl;
        self.insert(Node {
            id,
            size,
            flags: DEMAND,
            ready_at: t + latency,
            expires_at: expires,
            prev_expires: f64::NEG_INFINITY,
            prev: NIL,
            next: NIL,
        });
        self.demand_fetch(t);
        self.remember(
            id,
            Seen {
                expires_at: expires,
                size,
                accessed: true,
            },
        );
        outcome
    }

    /// Records what the simulation knows of `id`. A key new to it is
    /// queued to be forgotten, oldest first, once more than
    /// `max_remembered` keys are known; a key still cached is kept (its
    /// record goes to the back of the queue).
    fn remember(&mut self, id: u64, seen: Seen) {
        if self.seen.insert(id, seen).is_some() {
            return;
        }
        self.remembered.push_back(id);
        // A few looks at most: with more keys cached than the cap allows
        // the records of cached keys stay (the cache bounds them).
        for _ in 0..4 {
            if self.seen.len() <= self.cfg.max_remembered {
                break;
            }
            let Some(old) = self.remembered.pop_front() else {
                break;
            };
            if self.index.contains_key(&old) {
                self.remembered.push_back(old);
            } else {
                self.seen.remove(&old);
                self.own_ttl.remove(&old);
                self.stats.keys_forgotten += 1;
            }
        }
    }

    /// Keys the simulation remembers (those cached among them).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    fn demand_fetch(&mut self, t: f64) {
        self.stats.origin_fetches_demand += 1;
        self.budget.demand(t);
        self.count_fetch(t);
    }

    /// Moves the simulation's clock to `t` (never backwards): warms queued
    /// from now on start no earlier.
    pub fn set_now(&mut self, t: f64) {
        self.now = self.now.max(t);
    }

    /// The cached state of `id`, if it is in the cache.
    pub fn cached(&self, id: u64) -> Option<Cached> {
        let &i = self.index.get(&id)?;
        let e = &self.nodes[i as usize];
        Some(Cached {
            written_at: e.ready_at,
            expires_at: e.expires_at,
            in_flight: e.ready_at > self.now,
        })
    }

    /// Whether a read of `id` at `at` would be served from the cache as it
    /// stands (nothing else fetched meanwhile).
    pub fn valid_at(&self, id: u64, at: f64) -> bool {
        match self.index.get(&id) {
            Some(&i) => {
                let e = &self.nodes[i as usize];
                (at >= e.ready_at && at < e.expires_at) || at < e.prev_expires
            }
            None => false,
        }
    }

    /// Until when `id` holds, or will hold once its fetch lands, a servable
    /// value (0 when it holds none).
    pub fn valid_until(&self, id: u64) -> f64 {
        self.index.get(&id).map_or(0.0, |&i| {
            let e = &self.nodes[i as usize];
            e.expires_at.max(e.prev_expires)
        })
    }

    /// Whether `id` was read before.
    pub fn accessed(&self, id: u64) -> bool {
        self.seen.get(&id).is_some_and(|s| s.accessed)
    }

    /// Last known size of `id` (1 when never seen).
    pub fn size_of(&self, id: u64) -> u32 {
        self.seen.get(&id).map_or(1, |s| s.size)
    }

    /// The TTL of `id`'s values: the one the trace last gave it, else the
    /// configured one.
    pub fn ttl_of_key(&self, id: u64) -> f64 {
        self.ttl_of(self.own_ttl.get(&id).map(|&t| f64::from(t)))
    }

    /// A warming fetch of `id` started at `t` (the caller checked the
    /// budget), its value living the key's TTL ([`Sim::ttl_of_key`]).
    /// Skipped (`false`) when a fetch of `id` is already in flight.
    pub fn warm(&mut self, t: f64, id: u64, size: u32) -> bool {
        self.now = self.now.max(t);
        let ttl = self.ttl_of_key(id);
        let latency = self.cfg.latency;
        if let Some(&i) = self.index.get(&id) {
            let e = &mut self.nodes[i as usize];
            if t < e.ready_at {
                return false;
            }
            let serving = t < e.expires_at;
            let wasted = e.flags & WARMED != 0;
            e.prev_expires = if serving {
                e.expires_at
            } else {
                f64::NEG_INFINITY
            };
            e.flags = WARMED;
            e.ready_at = t + latency;
            e.expires_at = t + latency + ttl;
            let expires = e.expires_at;
            let old = e.size;
            e.size = size;
            if wasted {
                self.stats.wasted_warms += 1;
            }
            self.used = self.used - self.cost(old) + self.cost(size);
            self.touch(i);
            self.evict_for(0);
            self.set_seen(id, expires, size);
        } else {
            let expires = t + latency + ttl;
            match self.insert(Node {
                id,
                size,
                flags: WARMED,
                ready_at: t + latency,
                expires_at: expires,
                prev_expires: f64::NEG_INFINITY,
                prev: NIL,
                next: NIL,
            }) {
                Inserted::Stored => self.set_seen(id, expires, size),
                Inserted::TooBig => return false,
                // Fetched, then not stored: the fetch is spent for nothing.
                Inserted::Rejected => self.stats.wasted_warms += 1,
            }
        }
        self.stats.origin_fetches_warming += 1;
        self.budget.take(t);
        self.count_fetch(t);
        true
    }

    fn set_seen(&mut self, id: u64, expires_at: f64, size: u32) {
        match self.seen.get_mut(&id) {
            Some(s) => {
                s.expires_at = expires_at;
                s.size = size;
            }
            None => self.remember(
                id,
                Seen {
                    expires_at,
                    size,
                    accessed: false,
                },
            ),
        }
    }

    /// Final figures: warmed values never read and expired by `end` count as wasted.
    pub fn finish(&mut self, end: f64) -> Stats {
        let late = self
            .index
            .values()
            .filter(|&&i| {
                let e = &self.nodes[i as usize];
                e.flags & WARMED != 0 && e.expires_at <= end
            })
            .count() as u64;
        let mut s = self.stats.clone();
        s.wasted_warms += late;
        s.finish();
        s
    }

    /// Entries in the cache.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

/// Keys waiting for a warming fetch: priority descending, then FIFO; a key is
/// queued at most once (the service's queue rules).
#[derive(Default)]
pub struct WarmQueue {
    heap: BinaryHeap<(u8, std::cmp::Reverse<u64>, u64)>,
    queued: IdSet,
    seq: u64,
}

impl WarmQueue {
    /// Queues `id`; `false` when it is already queued.
    pub fn push(&mut self, id: u64, priority: u8) -> bool {
        if !self.queued.insert(id) {
            return false;
        }
        self.seq += 1;
        self.heap.push((priority, std::cmp::Reverse(self.seq), id));
        true
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Starts queued warms in order while the budget allows, up to time `t`;
    /// each starts as soon as a token is there.
    pub fn drain(&mut self, sim: &mut Sim, t: f64) {
        self.drain_with(sim, t, |_, _| {});
    }

    /// As [`WarmQueue::drain`], calling `dequeued(id, landed)` for each key
    /// taken off the queue: `landed` is when its value lands in the cache and
    /// the TTL it lives, `None` when no warm started (one was in flight
    /// already).
    pub fn drain_with(
        &mut self,
        sim: &mut Sim,
        t: f64,
        mut dequeued: impl FnMut(u64, Option<(f64, f64)>),
    ) {
        let mut at = if sim.now.is_finite() {
            sim.now.min(t)
        } else {
            t
        };
        while let Some(&(_, _, id)) = self.heap.peek() {
            let start = sim.budget.ready_at(at);
            if start > t {
                break;
            }
            at = start;
            self.heap.pop();
            self.queued.remove(&id);
            let size = sim.size_of(id);
            let started = sim.warm(at, id, size);
            dequeued(
                id,
                started.then(|| (at + sim.cfg.latency, sim.ttl_of_key(id))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `max_remembered` keys are remembered beyond the cached ones;
    /// the oldest are forgotten first, and a miss of a forgotten key counts
    /// as cold while a remembered one is still told evicted.
    #[test]
    fn the_memory_of_keys_is_capped() {
        let mut s = sim(Capacity::Entries(10), 3600.0, 0.0, 0.0);
        s.cfg.max_remembered = 100;
        for id in 0..1000u64 {
            assert_eq!(s.access(id as f64, id, 1, None), Outcome::Cold);
            assert!(s.remembered() <= 100, "{} at key {id}", s.remembered());
        }
        assert_eq!(s.stats.keys_forgotten, 900);
        assert_eq!(s.access(1000.0, 950, 1, None), Outcome::Evicted);
        assert_eq!(s.access(1001.0, 0, 1, None), Outcome::Cold, "forgotten");
        assert_eq!(s.access(1002.0, 999, 1, None), Outcome::Hit);
        // Cached keys are never forgotten: a cap below the cache's size
        // keeps the records of the cached keys.
        let mut s = sim(Capacity::Entries(50), 3600.0, 0.0, 0.0);
        s.cfg.max_remembered = 10;
        for id in 0..50u64 {
            s.access(id as f64, id, 1, None);
        }
        assert_eq!(s.stats.keys_forgotten, 0);
        s.set_now(100.0);
        assert!(s.warm(100.0, 7, 1), "a warm of a cached key");
        assert_eq!(s.access(101.0, 7, 1, None), Outcome::Hit);
    }

    fn sim(capacity: Capacity, ttl: f64, latency: f64, rps: f64) -> Sim {
        Sim::new(SimConfig {
            capacity,
            ttl,
            latency,
            rps,
            admission: false,
            max_remembered: usize::MAX,
        })
    }

    #[test]
    fn capacity_parses_entries_and_bytes() {
        assert_eq!(Capacity::parse("1000"), Ok(Capacity::Entries(1000)));
        assert_eq!(Capacity::parse("64MiB"), Ok(Capacity::Bytes(64 << 20)));
        assert_eq!(Capacity::parse("2kB"), Ok(Capacity::Bytes(2000)));
        assert!(Capacity::parse("x").is_err());
        assert!(Capacity::parse("5 parsecs").is_err());
    }

    /// A key read every 10 s with TTL 5 s misses every time: first cold,
    /// then expired.
    #[test]
    fn read_every_10s_ttl_5s_always_misses() {
        let mut s = sim(Capacity::Entries(100), 5.0, 0.0, 0.0);
        for i in 0..10 {
            s.access(f64::from(i) * 10.0, 1, 1, None);
        }
        let st = s.finish(100.0);
        assert_eq!(st.hits, 0);
        assert_eq!(st.misses_cold, 1);
        assert_eq!(st.misses_expired, 9);
        assert_eq!(st.origin_fetches_demand, 10);
    }

    /// 50 reads of one key within one origin latency: 1 cold miss, 49 wait
    /// on the same fetch, one stampede, one origin fetch.
    #[test]
    fn fifty_concurrent_misses_are_one_stampede() {
        let mut s = sim(Capacity::Entries(100), 60.0, 0.1, 0.0);
        for i in 0..50 {
            s.access(f64::from(i) * 0.001, 7, 1, None);
        }
        s.access(0.2, 7, 1, None);
        let st = s.finish(1.0);
        assert_eq!(st.misses_cold, 1);
        assert_eq!(st.misses_in_flight, 49);
        assert_eq!(st.stampedes, 1);
        assert_eq!(st.origin_fetches_demand, 1);
        assert_eq!(st.hits, 1);
        assert_eq!(st.peak_origin_rps, 1);
    }

    /// LRU by entries: capacity 2, reads a b c a -> a was evicted.
    #[test]
    fn lru_eviction_is_classified() {
        let mut s = sim(Capacity::Entries(2), 100.0, 0.0, 0.0);
        for (t, k) in [(0.0, 1), (1.0, 2), (2.0, 3), (3.0, 1), (4.0, 3)] {
            s.access(t, k, 1, None);
        }
        let st = s.finish(5.0);
        assert_eq!(
            (st.misses_cold, st.misses_evicted, st.hits),
            (3, 1, 1),
            "{st:?}"
        );
        assert_eq!(s.len(), 2);
    }

    /// Bytes: 3 values of 40 bytes in 100 bytes: the oldest goes.
    #[test]
    fn byte_capacity_evicts_by_size() {
        let mut s = sim(Capacity::Bytes(100), 100.0, 0.0, 0.0);
        s.access(0.0, 1, 40, None);
        s.access(1.0, 2, 40, None);
        s.access(2.0, 3, 40, None);
        assert!(s.cached(1).is_none());
        assert!(s.cached(2).is_some() && s.cached(3).is_some());
        // Larger than the whole cache: fetched, served to nobody, never stored.
        s.access(3.0, 4, 500, None);
        assert!(s.cached(4).is_none());
    }

    /// TinyLFU admission (moka's policy): a scan of keys read once does not
    /// displace a key read often; plain LRU lets the scan flush it. A value
    /// the filter refuses is served to its reader but not stored, and a
    /// refused warm is a wasted fetch.
    #[test]
    fn admission_keeps_the_hot_key_through_a_scan() {
        for admission in [true, false] {
            let mut s = Sim::new(SimConfig {
                admission,
                max_remembered: usize::MAX,
                ..sim(Capacity::Entries(2), 1000.0, 0.0, 0.0).cfg
            });
            for i in 0..5 {
                s.access(f64::from(i), 1, 1, None);
            }
            s.access(5.0, 2, 1, None);
            for id in 3..=10u64 {
                s.access(5.0 + id as f64, id, 1, None);
            }
            let hot = s.access(20.0, 1, 1, None);
            if admission {
                assert_eq!(hot, Outcome::Hit);
                assert_eq!(s.stats.admissions_rejected, 8);
                assert!(s.warm(21.0, 11, 1), "the fetch is spent");
                assert!(s.cached(11).is_none(), "but not stored");
                assert_eq!(
                    (s.stats.origin_fetches_warming, s.stats.wasted_warms),
                    (1, 1)
                );
            } else {
                assert_eq!(hot, Outcome::Evicted);
                assert_eq!(s.stats.admissions_rejected, 0);
            }
        }
    }

    /// A warm read once is useful; a warm never read before expiry is wasted.
    #[test]
    fn wasted_and_useful_warms() {
        let mut s = sim(Capacity::Entries(10), 10.0, 0.0, 0.0);
        assert!(s.warm(0.0, 1, 1));
        assert!(s.warm(0.0, 2, 1));
        assert_eq!(s.access(5.0, 1, 1, None), Outcome::Hit);
        // Key 2 is first read after its value expired: a cold miss, a wasted warm.
        assert_eq!(s.access(20.0, 2, 1, None), Outcome::Cold);
        let st = s.finish(30.0);
        assert_eq!((st.useful_warms, st.wasted_warms), (1, 1));
        assert_eq!(st.origin_fetches_warming, 2);
    }

    /// A refresh in flight keeps serving the previous value.
    #[test]
    fn refresh_serves_the_old_value_until_the_new_one() {
        let mut s = sim(Capacity::Entries(10), 10.0, 1.0, 0.0);
        s.access(0.0, 1, 1, None); // ready at 1, expires at 11
        assert!(s.warm(10.5, 1, 1)); // new value at 11.5
        assert_eq!(s.access(10.9, 1, 1, None), Outcome::Hit);
        assert_eq!(s.access(11.2, 1, 1, None), Outcome::InFlight);
        assert_eq!(s.access(11.6, 1, 1, None), Outcome::Hit);
        assert!(!s.warm(11.6, 1, 1) || s.cached(1).is_some());
    }

    /// A warm writes with the TTL the trace gave the key (the service's warm
    /// takes the origin's `max-age` for that key), else the configured one.
    #[test]
    fn warms_use_the_keys_own_ttl() {
        let mut s = sim(Capacity::Entries(100), 3600.0, 0.0, 0.0);
        s.access(0.0, 1, 1, Some(50.0));
        assert!(s.warm(40.0, 1, 1));
        assert!(s.valid_at(1, 89.0));
        assert!(!s.valid_at(1, 91.0), "the key's 50 s, not 3600 s");
        s.access(0.0, 2, 1, None);
        assert!(s.warm(40.0, 2, 1));
        assert!(s.valid_at(2, 3000.0));
        assert_eq!(s.ttl_of_key(1), 50.0);
        assert_eq!(s.ttl_of_key(3), 3600.0, "a key never seen");
    }

    /// Budget of 2/s, burst of one (the service's limiter): warms queued at
    /// t=0 start at 0, 0.5, 1.0, 1.5 ...
    #[test]
    fn warm_queue_respects_the_budget_and_priority() {
        let mut s = sim(Capacity::Entries(100), 100.0, 0.0, 2.0);
        let mut q = WarmQueue::default();
        for id in 1..=6 {
            assert!(q.push(id, if id == 6 { 90 } else { 50 }));
        }
        assert!(!q.push(3, 50));
        q.drain(&mut s, 0.0);
        assert_eq!(s.stats.origin_fetches_warming, 1);
        assert!(s.cached(6).is_some(), "priority 90 first");
        q.drain(&mut s, 1.0);
        assert_eq!(s.stats.origin_fetches_warming, 3);
        q.drain(&mut s, 10.0);
        assert_eq!(s.stats.origin_fetches_warming, 6);
        assert!(q.is_empty());
    }
}

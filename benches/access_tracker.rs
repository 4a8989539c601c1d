//! Benchmarks of the access tracker, the hot path of every cache read.
//!
//! - `record/*`: throughput of `AccessTracker::record` on one thread, over
//!   1,000,000 distinct pre-generated keys `user:{n}:profile`, in a Zipf-like
//!   mix (s = 1, realistic for cache traffic) and a uniform mix (worst case
//!   for the CPU caches). Reported as elements (records) per second. The
//!   requirement is >= 5 million per second on one core.
//! - memory (printed before the criterion groups, only under `cargo bench`):
//!   live heap bytes per tracked key after 10,000,000 distinct keys went
//!   through a tracker capped at 1,000,000 (so eviction runs ~150 times).
//!   Measured by a counting global allocator wrapping the system allocator.
//!   The requirement is <= 100 bytes per tracked key.
//!
//! Run: `cargo bench --bench access_tracker`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warming::access::AccessTracker;

/// Counts live heap bytes. The library forbids `unsafe`; implementing
/// `GlobalAlloc` requires it, and this bench binary only forwards to `System`.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn add(n: isize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    if n > 0 && now > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged and only updates counters afterwards.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BUCKET: Duration = Duration::from_secs(15 * 60);
const T0: u64 = 1_736_938_200;
const DISTINCT: usize = 1_000_000;
const BATCH: usize = 1_000_000;

fn key(n: usize) -> String {
    format!("user:{n}:profile")
}

/// `BATCH` key indices drawn from a Zipf(s = 1) law over `DISTINCT` keys
/// (inverse CDF by binary search), the ranks scattered by a permutation so
/// that hot keys are not neighbours in memory order.
fn zipf_indices(rng: &mut StdRng) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(DISTINCT);
    let mut acc = 0.0f64;
    for i in 0..DISTINCT {
        acc += 1.0 / (i as f64 + 1.0);
        cdf.push(acc);
    }
    let mut perm: Vec<u32> = (0..DISTINCT as u32).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, rng.random_range(0..=i));
    }
    (0..BATCH)
        .map(|_| {
            let u = rng.random::<f64>() * acc;
            let rank = cdf.partition_point(|&c| c < u).min(DISTINCT - 1);
            perm[rank]
        })
        .collect()
}

fn uniform_indices(rng: &mut StdRng) -> Vec<u32> {
    (0..BATCH)
        .map(|_| rng.random_range(0..DISTINCT as u32))
        .collect()
}

fn bench_record(c: &mut Criterion) {
    let keys: Vec<String> = (0..DISTINCT).map(key).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mixes = [
        ("zipf", zipf_indices(&mut rng)),
        ("uniform", uniform_indices(&mut rng)),
    ];
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(6));
    for (name, idx) in &mixes {
        // The keys of the batch laid out contiguously in access order, as a
        // request parser would hand them over: reading the key is a
        // sequential stream, so the bench measures `record`, not the
        // cache misses of fetching 1M scattered `String`s.
        let mut arena = String::with_capacity(BATCH * 20);
        let mut spans = Vec::with_capacity(BATCH);
        for (i, &k) in idx.iter().enumerate() {
            let start = arena.len();
            arena.push_str(&keys[k as usize]);
            // Time advances 10 s over a batch: a steady flow of accesses.
            spans.push((start as u32, arena.len() as u32, T0 + (i / 100_000) as u64));
        }
        let tracker = AccessTracker::new(DISTINCT, BUCKET);
        group.bench_function(*name, |b| {
            b.iter(|| {
                for &(s, e, at) in &spans {
                    tracker.record(black_box(&arena[s as usize..e as usize]), at);
                }
            })
        });
        println!("record/{name}: {} keys tracked", tracker.len());
    }
    group.finish();
}

/// Live bytes per tracked key after 10M distinct keys through a 1M cap.
fn memory_per_key() {
    const CAP: usize = 1_000_000;
    const INSERTS: usize = 10_000_000;
    let mut buf = String::with_capacity(64);
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let tracker = AccessTracker::new(CAP, BUCKET);
    for n in 0..INSERTS {
        use std::fmt::Write as _;
        buf.clear();
        let _ = write!(buf, "user:{n}:profile");
        // 2,000 new keys per second: 10M keys span ~83 min, all five buckets.
        tracker.record(&buf, T0 + (n / 2_000) as u64);
    }
    let elapsed = started.elapsed();
    let live = LIVE.load(Ordering::Relaxed) - before;
    let len = tracker.len();
    let per_key = live as f64 / len as f64;
    println!(
        "memory: {INSERTS} distinct keys into cap {CAP} in {:.2?}: {len} tracked, \
         {live} live bytes = {per_key:.1} bytes/tracked key ({:.1} bytes per cap slot); \
         tracker.heap_bytes() = {}; peak live during the run {} bytes",
        elapsed,
        live as f64 / CAP as f64,
        tracker.heap_bytes(),
        PEAK.load(Ordering::Relaxed) - before,
    );
    assert!(len <= CAP, "tracked {len} > cap {CAP}");
    assert!(per_key <= 100.0, "{per_key:.1} bytes per tracked key > 100");
    drop(tracker);
}

criterion_group!(benches, bench_record);

fn main() {
    // Only under `cargo bench` (not when `cargo test` runs benches in test mode).
    if std::env::args().any(|a| a == "--bench") {
        memory_per_key();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

//! Cache backends against real stores: the Redis of this machine
//! (`127.0.0.1:6379`, database 9) and the embedded moka cache; the batch
//! writer over a real backend; the coalescing read-through against the test
//! origin.
//!
//! Redis tests do not skip when Redis is down: they fail with the message
//! that says how to start it. Every test writes under its own unique prefix,
//! gives every key a TTL, and deletes its keys at the end.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use warming::cache::batch::BatchWriter;
use warming::cache::memory::MemoryCache;
use warming::cache::redis::RedisCache;
use warming::cache::{Cache, CacheEntry, CacheError};
use warming::config::{SharedTunables, Tunables};

const REDIS_URL: &str = "redis://127.0.0.1:6379/9";

/// A prefix no other test (or earlier run) uses.
fn unique_prefix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("test:{:x}-{}-{}:", nanos, std::process::id(), seq)
}

async fn redis_cache(prefix: &str) -> RedisCache {
    RedisCache::connect(REDIS_URL, prefix.to_owned())
        .await
        .unwrap_or_else(|e| panic!("Redis tests need a Redis at 127.0.0.1:6379: {e}"))
}

/// Deletes every key under `prefix` (SCAN + DEL; the prefix is escaped).
async fn cleanup(prefix: &str) {
    let pattern = format!("{}*", warming::cache::redis::escape_glob(prefix));
    let mut conn = support::redis::connect(REDIS_URL).await;
    support::redis::delete_matching(&mut conn, &pattern).await;
}

fn entry(key: &str, value: &str, ttl: Duration) -> CacheEntry {
    CacheEntry {
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        ttl,
    }
}

fn tunables(t: Tunables) -> SharedTunables {
    Arc::new(ArcSwap::from_pointee(t))
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

async fn scan_set(cache: &dyn Cache, pattern: &str) -> BTreeSet<String> {
    let keys = cache.scan(pattern, 10_000).await.unwrap();
    let unique: BTreeSet<String> = keys.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "scan {pattern:?} returned duplicates: {keys:?}"
    );
    unique
}

/// The scan contract, the same for every backend.
async fn check_scan_patterns(cache: &dyn Cache, prefix: &str) {
    let keys = [
        "user:1",
        "user:10",
        "user:123:profile",
        "user:2",
        "a",
        "b",
        "x",
        "ab",
        "ba",
        "c1",
    ];
    let entries: Vec<_> = keys
        .iter()
        .map(|k| entry(k, "v", Duration::from_secs(60)))
        .collect();
    cache.set_many(&entries).await.unwrap();

    let all = scan_set(cache, "*").await;
    assert_eq!(all, set(&keys));
    assert!(
        all.iter().all(|k| !k.starts_with(prefix)),
        "prefix not stripped: {all:?}"
    );

    assert_eq!(
        scan_set(cache, "user:1*").await,
        set(&["user:1", "user:10", "user:123:profile"])
    );
    assert_eq!(scan_set(cache, "?").await, set(&["a", "b", "x"]));
    assert_eq!(scan_set(cache, "[ab]*").await, set(&["a", "b", "ab", "ba"]));
    assert_eq!(scan_set(cache, "nothing:*").await, set(&[]));

    let limited = cache.scan("*", 3).await.unwrap();
    assert_eq!(limited.len(), 3, "{limited:?}");
    assert!(limited.iter().all(|k| all.contains(k)), "{limited:?}");
    assert!(cache.scan("*", 0).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- Redis

#[tokio::test]
async fn redis_set_many_lands_values_with_their_ttl() {
    let prefix = unique_prefix();
    let cache = redis_cache(&prefix).await;
    let mut entries: Vec<_> = (0..100)
        .map(|i| entry(&format!("k{i}"), &format!("v{i}"), Duration::from_secs(60)))
        .collect();
    entries.push(entry("short", "s", Duration::from_secs(5)));
    cache.set_many(&entries).await.unwrap();

    for i in 0..100 {
        let got = cache.get(&format!("k{i}")).await.unwrap();
        assert_eq!(got, Some(Bytes::from(format!("v{i}"))));
    }
    let long = cache.ttl("k0").await.unwrap().expect("k0 has a TTL");
    assert!(
        long > Duration::from_secs(55) && long <= Duration::from_secs(60),
        "{long:?}"
    );
    let short = cache.ttl("short").await.unwrap().expect("short has a TTL");
    assert!(
        short > Duration::from_secs(3) && short <= Duration::from_secs(5),
        "{short:?}"
    );

    // Stored under the prefix, with PX (millisecond) precision.
    let mut conn = support::redis::connect(REDIS_URL).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}k0"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((55_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg("k0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(raw, None, "the unprefixed key must not exist");

    // Overwrite replaces value and TTL.
    cache
        .set_many(&[entry("k0", "new", Duration::from_secs(10))])
        .await
        .unwrap();
    assert_eq!(cache.get("k0").await.unwrap(), Some(Bytes::from("new")));
    assert!(cache.ttl("k0").await.unwrap().unwrap() <= Duration::from_secs(10));
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_get_and_ttl_of_absent_and_persistent_keys() {
    let prefix = unique_prefix();
    let cache = redis_cache(&prefix).await;
    assert_eq!(cache.get("missing").await.unwrap(), None);
    assert_eq!(cache.ttl("missing").await.unwrap(), None);

    let mut conn = support::redis::connect(REDIS_URL).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}forever"))
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cache.get("forever").await.unwrap(), Some(Bytes::from("x")));
    assert_eq!(
        cache.ttl("forever").await.unwrap(),
        None,
        "no expiry reads as None"
    );

    // ttl_many: one answer per key, in order; absent = None, no expiry = MAX.
    // More keys than one pipeline holds, so the chunks are stitched in order.
    let mut entries: Vec<CacheEntry> = (0..warming::cache::TTL_BATCH + 5)
        .map(|i| entry(&format!("t{i}"), "v", Duration::from_secs(100 + i as u64)))
        .collect();
    entries.push(entry("short", "v", Duration::from_secs(5)));
    cache.set_many(&entries).await.unwrap();
    let mut keys: Vec<String> = vec!["short".into(), "missing".into(), "forever".into()];
    keys.extend((0..warming::cache::TTL_BATCH + 5).map(|i| format!("t{i}")));
    let ttls = cache.ttl_many(&keys).await.unwrap();
    assert_eq!(ttls.len(), keys.len());
    let short = ttls[0].expect("short has a TTL");
    assert!(
        short > Duration::from_secs(3) && short <= Duration::from_secs(5),
        "{short:?}"
    );
    assert_eq!(ttls[1], None, "absent");
    assert_eq!(ttls[2], Some(Duration::MAX), "no expiry");
    for (i, t) in ttls[3..].iter().enumerate() {
        let t = t.unwrap_or_else(|| panic!("t{i} has a TTL"));
        let want = Duration::from_secs(100 + i as u64);
        assert!(
            t <= want && t > want - Duration::from_secs(3),
            "t{i}: {t:?}"
        );
    }

    cache.set_many(&[]).await.unwrap();
    cache.ping().await.unwrap();
    assert_eq!(cache.backend(), "redis");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_short_ttl_expires() {
    let prefix = unique_prefix();
    let cache = redis_cache(&prefix).await;
    cache
        .set_many(&[entry("k", "v", Duration::from_millis(300))])
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap(), Some(Bytes::from("v")));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(cache.ttl("k").await.unwrap(), None);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_scan_patterns_limit_and_prefix() {
    let prefix = unique_prefix();
    let cache = redis_cache(&prefix).await;
    check_scan_patterns(&cache, &prefix).await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_scan_treats_the_prefix_literally() {
    // Unescaped, `a*[b]:` would also match the neighbour's `aZZb:`.
    let base = unique_prefix();
    let globby = format!("{base}a*[b]:");
    let neighbour = format!("{base}aZZb:");
    let cache = redis_cache(&globby).await;
    let other = redis_cache(&neighbour).await;
    cache
        .set_many(&[entry("mine", "1", Duration::from_secs(60))])
        .await
        .unwrap();
    other
        .set_many(&[entry("theirs", "2", Duration::from_secs(60))])
        .await
        .unwrap();

    assert_eq!(scan_set(&cache, "*").await, set(&["mine"]));
    assert_eq!(scan_set(&other, "*").await, set(&["theirs"]));
    assert_eq!(cache.get("mine").await.unwrap(), Some(Bytes::from("1")));
    cleanup(&base).await;
}

#[tokio::test]
async fn redis_scan_finds_every_one_of_many_keys() {
    let prefix = unique_prefix();
    let cache = redis_cache(&prefix).await;
    let keys: Vec<String> = (0..5000).map(|i| format!("item:{i}")).collect();
    for chunk in keys.chunks(500) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|k| entry(k, "v", Duration::from_secs(120)))
            .collect();
        cache.set_many(&entries).await.unwrap();
    }
    let found = scan_set(&cache, "*").await;
    assert_eq!(found.len(), 5000);
    assert_eq!(found, keys.iter().cloned().collect());

    // item:1, item:10..19, item:100..199, item:1000..1999
    let ones = scan_set(&cache, "item:1*").await;
    assert_eq!(ones.len(), 1 + 10 + 100 + 1000);

    let limited = cache.scan("*", 1234).await.unwrap();
    assert_eq!(limited.len(), 1234);
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_unreachable_fails_fast_saying_how_to_start_it() {
    let started = Instant::now();
    let err = RedisCache::connect("redis://127.0.0.1:1/9", String::new())
        .await
        .err()
        .expect("must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, CacheError::Unavailable(_)), "{err}");
    assert!(
        err.to_string()
            .contains("redis-server --daemonize yes --port 6379"),
        "{err}"
    );
}

// ---------------------------------------------------------------- memory

#[tokio::test]
async fn memory_short_ttl_expires() {
    let cache = MemoryCache::new(1000, "m:".into());
    cache
        .set_many(&[
            entry("short", "s", Duration::from_millis(300)),
            entry("long", "l", Duration::from_secs(60)),
        ])
        .await
        .unwrap();
    assert_eq!(cache.get("short").await.unwrap(), Some(Bytes::from("s")));
    let left = cache.ttl("short").await.unwrap().unwrap();
    assert!(
        left <= Duration::from_millis(300) && left > Duration::from_millis(100),
        "{left:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(3);
    while cache.get("short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "entry outlived its TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cache.get("short").await.unwrap(), None);
    assert_eq!(cache.ttl("short").await.unwrap(), None);
    assert!(!scan_set(&cache, "*").await.contains("short"));
    assert_eq!(cache.get("long").await.unwrap(), Some(Bytes::from("l")));
}

#[tokio::test]
async fn memory_capacity_is_bounded() {
    let cache = MemoryCache::new(100, String::new());
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|i| entry(&format!("k{i}"), "v", Duration::from_secs(60)))
            .collect();
        cache.set_many(&entries).await.unwrap();
    }
    cache.run_pending_tasks().await;
    assert!(
        cache.entry_count() <= 100,
        "entry_count {}",
        cache.entry_count()
    );
    let mut present = 0;
    for i in 0..1000 {
        if cache.get(&format!("k{i}")).await.unwrap().is_some() {
            present += 1;
        }
    }
    assert!(present <= 100, "{present} entries present");
}

#[tokio::test]
async fn memory_scan_patterns_limit_and_prefix() {
    let prefix = "mem:";
    let cache = MemoryCache::new(10_000, prefix.into());
    check_scan_patterns(&cache, prefix).await;
    cache.ping().await.unwrap();
    assert_eq!(cache.backend(), "memory");
}

// ---------------------------------------------------------------- batch writer

/// A real backend that records the size of every `set_many` and takes a
/// little time per call, like a network round trip.
struct Recording {
    inner: MemoryCache,
    batches: Mutex<Vec<usize>>,
    fail: bool,
    /// The next `set_many` panics (a buggy backend).
    panic_next: AtomicBool,
}

impl Recording {
    fn new(fail: bool) -> Arc<Self> {
        Arc::new(Recording {
            inner: MemoryCache::new(100_000, String::new()),
            batches: Mutex::new(Vec::new()),
            fail,
            panic_next: AtomicBool::new(false),
        })
    }
}

#[async_trait]
impl Cache for Recording {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        self.inner.get(key).await
    }
    async fn set_many(&self, entries: &[CacheEntry]) -> Result<(), CacheError> {
        self.batches.lock().push(entries.len());
        tokio::time::sleep(Duration::from_millis(2)).await;
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("backend bug");
        }
        if self.fail {
            return Err(CacheError::Unavailable("backend down".into()));
        }
        self.inner.set_many(entries).await
    }
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        self.inner.ttl(key).await
    }
    async fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>, CacheError> {
        self.inner.ttl_many(keys).await
    }
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        self.inner.scan(pattern, limit).await
    }
    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }
    fn backend(&self) -> &'static str {
        "memory"
    }
}

async fn write_concurrently(
    writer: &BatchWriter,
    n: usize,
    tag: &str,
) -> Vec<Result<(), CacheError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let writer = writer.clone();
        let e = entry(
            &format!("{tag}{i}"),
            &format!("v{i}"),
            Duration::from_secs(60),
        );
        tasks.spawn(async move { writer.write(e).await });
    }
    tasks.join_all().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writer_groups_concurrent_writes_within_the_limit() {
    let cache = Recording::new(false);
    let t = tunables(Tunables {
        max_batch_size: 50,
        ..Tunables::default()
    });
    let writer = BatchWriter::spawn(cache.clone(), t.clone());

    let results = write_concurrently(&writer, 200, "k").await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let batches = cache.batches.lock().clone();
    assert!(batches.iter().all(|n| (1..=50).contains(n)), "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), 200);
    assert!(
        batches.len() < 200,
        "no batching happened: {} calls",
        batches.len()
    );
    for i in 0..200 {
        assert_eq!(
            cache.get(&format!("k{i}")).await.unwrap(),
            Some(Bytes::from(format!("v{i}")))
        );
    }

    // A runtime change applies to the next batches.
    t.store(Arc::new(Tunables {
        max_batch_size: 5,
        ..Tunables::default()
    }));
    cache.batches.lock().clear();
    let results = write_concurrently(&writer, 100, "j").await;
    assert!(results.iter().all(|r| r.is_ok()));
    let batches = cache.batches.lock().clone();
    assert!(batches.iter().all(|&n| n <= 5), "{batches:?}");
    assert_eq!(batches.iter().sum::<usize>(), 100);
}

#[tokio::test]
async fn batch_writer_writes_a_lone_entry_at_once() {
    let cache = Recording::new(false);
    let writer = BatchWriter::spawn(cache.clone(), tunables(Tunables::default()));
    let started = Instant::now();
    writer
        .write(entry("solo", "v", Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(*cache.batches.lock(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writer_reports_backend_errors_to_every_writer() {
    let cache = Recording::new(true);
    let writer = BatchWriter::spawn(cache.clone(), tunables(Tunables::default()));
    let results = write_concurrently(&writer, 20, "k").await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(CacheError::Unavailable(_)))),
        "{results:?}"
    );
}

#[tokio::test]
async fn batch_writer_survives_a_panicking_backend() {
    let cache = Recording::new(false);
    let writer = BatchWriter::spawn(cache.clone(), tunables(Tunables::default()));
    cache.panic_next.store(true, Ordering::SeqCst);
    let err = writer
        .write(entry("a", "v", Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Command(_)), "{err}");
    writer
        .write(entry("b", "v", Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(cache.get("b").await.unwrap(), Some(Bytes::from("v")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_writer_drains_then_exits_when_handles_drop() {
    let cache = Recording::new(false);
    let (writer, task) =
        BatchWriter::spawn_with_handle(cache.clone(), tunables(Tunables::default()));
    let mut pending = Vec::new();
    for i in 0..30 {
        let w = writer.clone();
        pending.push(tokio::spawn(async move {
            w.write(entry(&format!("d{i}"), "v", Duration::from_secs(60)))
                .await
        }));
    }
    drop(writer);
    for p in pending {
        p.await.unwrap().unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer task did not exit")
        .unwrap();
    assert_eq!(cache.batches.lock().iter().sum::<usize>(), 30);
}

#[tokio::test]
async fn batch_writer_over_redis_pipelines_the_batch() {
    let prefix = unique_prefix();
    let cache: Arc<dyn Cache> = Arc::new(redis_cache(&prefix).await);
    let writer = BatchWriter::spawn(cache.clone(), tunables(Tunables::default()));
    let results = write_concurrently(&writer, 120, "b").await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(scan_set(cache.as_ref(), "b*").await.len(), 120);
    assert_eq!(cache.get("b7").await.unwrap(), Some(Bytes::from("v7")));
    cleanup(&prefix).await;
}

// ---------------------------------------------------------------- read-through

mod read_through {
    use super::*;
    use crate::support::origin::TestOrigin;
    use warming::origin::OriginError;
    use warming::origin::http::HttpOrigin;
    use warming::origin::limiter::OriginLimiter;
    use warming::origin::retry::{FetchObserver, GuardedOrigin};
    use warming::readthrough::{ReadError, ReadSource, ReadThrough};

    struct Quiet;
    impl FetchObserver for Quiet {
        fn rate_limited(&self) {}
        fn attempt(&self, _key: &str, _latency: Duration, _result: Result<(), &OriginError>) {}
    }

    fn read_through(origin: &TestOrigin, cache: Arc<dyn Cache>) -> ReadThrough {
        let http = HttpOrigin::new(&origin.url_template()).unwrap();
        let guarded = GuardedOrigin::new(Arc::new(http), Arc::new(OriginLimiter::new(0)));
        let t = Tunables {
            retry_attempts: 0,
            ttl_jitter: 0.0,
            default_ttl: Duration::from_secs(600),
            origin_timeout: Duration::from_secs(5),
            ..Tunables::default()
        };
        ReadThrough::new(cache, guarded, tunables(t), Arc::new(Quiet))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_origin_request() {
        let origin = TestOrigin::start().await;
        origin.set_latency(Duration::from_millis(200));
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000, String::new()));
        let rt = read_through(&origin, cache.clone());

        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let rt = rt.clone();
            tasks.spawn(async move { rt.get("cold").await });
        }
        let results = tasks.join_all().await;
        assert_eq!(origin.requests(), 1, "coalescing failed");
        let mut origin_count = 0;
        for r in &results {
            let (value, source) = r.as_ref().unwrap();
            assert_eq!(value, &Bytes::from("value-of:cold"));
            match source {
                ReadSource::Origin => origin_count += 1,
                ReadSource::Coalesced => {}
                ReadSource::Hit => panic!("nothing was cached yet"),
            }
        }
        assert_eq!(origin_count, 1);
        assert_eq!(rt.in_flight(), 0);

        let ttl = cache.ttl("cold").await.unwrap().unwrap();
        assert!(
            ttl > Duration::from_secs(590) && ttl <= Duration::from_secs(600),
            "{ttl:?}"
        );
        let (value, source) = rt.get("cold").await.unwrap();
        assert_eq!(
            (value, source),
            (Bytes::from("value-of:cold"), ReadSource::Hit)
        );
        assert_eq!(origin.requests(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetch_finishes_and_fills_the_cache_after_callers_give_up() {
        let origin = TestOrigin::start().await;
        origin.set_latency(Duration::from_millis(300));
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000, String::new()));
        let rt = read_through(&origin, cache.clone());

        let gave_up = tokio::time::timeout(Duration::from_millis(50), rt.get("slow")).await;
        assert!(gave_up.is_err(), "the caller should have timed out");
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get("slow").await.unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "abandoned fetch never filled the cache"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(origin.requests(), 1);
        assert_eq!(rt.get("slow").await.unwrap().1, ReadSource::Hit);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn origin_errors_reach_every_caller_and_do_not_stick() {
        let origin = TestOrigin::start().await;
        origin.set_status("gone", 404);
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000, String::new()));
        let rt = read_through(&origin, cache.clone());

        let err = rt.get("gone").await.unwrap_err();
        assert!(
            matches!(err, ReadError::Origin(OriginError::NotFound)),
            "{err:?}"
        );
        assert_eq!(rt.in_flight(), 0);
        assert_eq!(cache.get("gone").await.unwrap(), None);
        // The failed fetch left the map: the next miss asks the origin again.
        let _ = rt.get("gone").await.unwrap_err();
        assert_eq!(origin.requests_for("gone"), 2);
    }

    #[tokio::test]
    async fn origin_max_age_sets_the_ttl() {
        let origin = TestOrigin::start().await;
        origin.set_max_age(Some(120));
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1000, String::new()));
        let rt = read_through(&origin, cache.clone());
        assert_eq!(rt.get("aged").await.unwrap().1, ReadSource::Origin);
        let ttl = cache.ttl("aged").await.unwrap().unwrap();
        assert!(
            ttl > Duration::from_secs(115) && ttl <= Duration::from_secs(120),
            "{ttl:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_cache_write_still_returns_the_value() {
        let origin = TestOrigin::start().await;
        let cache = Recording::new(true);
        let rt = read_through(&origin, cache.clone());
        let (value, source) = rt.get("k").await.unwrap();
        assert_eq!(
            (value, source),
            (Bytes::from("value-of:k"), ReadSource::Origin)
        );
        assert_eq!(*cache.batches.lock(), vec![1], "the write was attempted");
    }

    #[tokio::test]
    async fn read_through_over_redis() {
        let prefix = unique_prefix();
        let origin = TestOrigin::start().await;
        let cache: Arc<dyn Cache> = Arc::new(redis_cache(&prefix).await);
        let rt = read_through(&origin, cache.clone());
        assert_eq!(rt.get("r:1").await.unwrap().1, ReadSource::Origin);
        assert_eq!(
            rt.get("r:1").await.unwrap(),
            (Bytes::from("value-of:r:1"), ReadSource::Hit)
        );
        let ttl = cache.ttl("r:1").await.unwrap().unwrap();
        assert!(ttl > Duration::from_secs(590), "{ttl:?}");
        cleanup(&prefix).await;
    }
}

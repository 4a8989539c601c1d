//! The coordination primitives of `src/cluster/` against the real Redis on
//! 127.0.0.1:6379 (database 11). Each test uses its own namespace and
//! deletes its keys at the end. Several handles built from separate
//! connections stand in for several instances.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use warming::cluster::lease::hash_tag;
use warming::cluster::{
    Access, AccessFanout, Band, ClusterLimiter, Coordinator, FiringLease, InstanceInfo, Leases,
    Membership, SharedState, StreamQueue,
};
use warming::config::Strategy;
use warming::events::WarmStatus;
use warming::warm::queue::Task;

const URL: &str = "redis://127.0.0.1:6379/11";

/// A unique namespace per test (and per run).
fn namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{test}-{}-{nanos}", std::process::id())
}

/// Another "instance": a separate connection to the same namespace.
async fn instance(ns: &str) -> Coordinator {
    Coordinator::connect(URL, ns).await.unwrap_or_else(|e| {
        panic!(
            "{e}\nThese tests need Redis on 127.0.0.1:6379: start it with \
             `redis-server --daemonize yes --port 6379 --save '' --appendonly no` \
             (or scripts/services.sh)"
        )
    })
}

/// Deletes every key of the namespace, the co-located lease keys included.
async fn cleanup(coord: &Coordinator) {
    let pattern = format!("*warming:{{{}}}:*", coord.namespace().name());
    support::redis::delete_matching(&mut coord.conn(), &pattern).await;
}

fn task(key: &str, priority: u8) -> Task {
    Task {
        key: key.into(),
        priority,
        job_id: "job-1".into(),
        strategy: Strategy::Breadth,
        seq: 0,
    }
}

#[tokio::test]
async fn queue_deduplicates_across_instances() {
    let ns = namespace("dedup");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let q1 = StreamQueue::new(&c1).await.unwrap();
    let q2 = StreamQueue::new(&c2).await.unwrap();

    assert_eq!(
        q1.push_many(vec![task("a", 50), task("b", 50), task("a", 90)])
            .await
            .unwrap(),
        [true, true, false]
    );
    assert_eq!(
        q2.push_many(vec![task("a", 10), task("c", 10)])
            .await
            .unwrap(),
        [false, true]
    );
    assert_eq!(q1.keys_count().await.unwrap(), 3);
    assert_eq!(q2.len().await.unwrap(), 3);

    let claimed = q2.next("i2", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(claimed.task.key, "a");
    assert_eq!(claimed.task.job_id.as_ref(), "job-1");
    assert_eq!(claimed.task.strategy, Strategy::Breadth);
    assert_eq!(claimed.deliveries, 1);
    assert!(!claimed.poisoned);
    assert_eq!(
        q1.push_many(vec![task("a", 50)]).await.unwrap(),
        [false],
        "in flight elsewhere"
    );
    assert_eq!(q1.pending_count().await.unwrap(), 1);

    assert!(q2.ack(&claimed).await.unwrap());
    assert!(
        !q1.ack(&claimed).await.unwrap(),
        "a second ack changes nothing"
    );
    assert!(!q1.contains("a").await.unwrap());
    assert_eq!(
        q1.push_many(vec![task("a", 50)]).await.unwrap(),
        [true],
        "finished keys may be queued again"
    );
    cleanup(&c1).await;
}

/// Shutdown's hand-back: every entry a consumer has claimed goes back to
/// the queue at once, the ones its caller holds and the ones it never saw
/// (a claiming read whose reply was lost), so another instance takes them
/// without waiting for the visibility timeout.
#[tokio::test]
async fn hand_back_all_returns_every_claim_even_unseen_ones() {
    let ns = namespace("handback");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let q1 = StreamQueue::new(&c1).await.unwrap();
    let q2 = StreamQueue::new(&c2).await.unwrap();
    let mut tasks: Vec<_> = (0..3).map(|i| task(&format!("h{i}"), 90)).collect();
    tasks.extend((0..4).map(|i| task(&format!("m{i}"), 50)));
    q1.push_many(tasks).await.unwrap();

    let held = q1.next_batch("i1", 2, Duration::ZERO).await.unwrap();
    assert_eq!(held.len(), 2);
    // A read that claimed two entries for i1 and whose reply never arrived.
    let mut conn = c1.conn();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("warmers")
        .arg("i1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg(q1.stream_key(Band::Mid))
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();

    assert_eq!(q1.hand_back_all("i1").await.unwrap(), 4);
    for band in Band::ALL {
        let pending = support::redis::claimed_by(&mut conn, q1.stream_key(band), "i1").await;
        assert!(pending.is_empty(), "{band:?}: {pending:?}");
    }
    assert!(
        q1.contains("m0").await.unwrap(),
        "a handed-back key stays deduplicated"
    );
    let mut got = Vec::new();
    loop {
        let batch = q2.next_batch("i2", 10, Duration::ZERO).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for c in &batch {
            assert!(q2.ack(c).await.unwrap());
        }
        got.extend(batch.into_iter().map(|c| c.task.key));
    }
    // Each band in order, handed-back entries at its tail.
    assert_eq!(got, ["h2", "h0", "h1", "m2", "m3", "m0", "m1"]);
    assert_eq!(q1.hand_back_all("i1").await.unwrap(), 0);
    assert!(!q1.contains("m0").await.unwrap());
    cleanup(&c1).await;
}

/// The pump's batch claim: one round trip takes up to `max` entries of the
/// best band that has any, never lower-band work while higher-band work
/// waits; every entry is claimed once, across instances, and is acked.
#[tokio::test]
async fn batch_claims_take_the_best_band_first() {
    let ns = namespace("batch");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let q1 = StreamQueue::new(&c1).await.unwrap();
    let q2 = StreamQueue::new(&c2).await.unwrap();
    let mut tasks: Vec<_> = (0..5).map(|i| task(&format!("h{i}"), 90)).collect();
    tasks.extend((0..12).map(|i| task(&format!("m{i}"), 50)));
    tasks.push(task("l0", 10));
    q1.push_many(tasks).await.unwrap();

    let first = q1.next_batch("i1", 8, Duration::ZERO).await.unwrap();
    let keys = |b: &[warming::cluster::Claimed]| -> Vec<String> {
        b.iter().map(|c| c.task.key.clone()).collect()
    };
    assert_eq!(
        keys(&first),
        ["h0", "h1", "h2", "h3", "h4"],
        "the high band only"
    );
    assert!(first.iter().all(|c| c.band == Band::High));
    let second = q2.next_batch("i2", 8, Duration::ZERO).await.unwrap();
    assert_eq!(
        keys(&second),
        (0..8).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let third = q1.next_batch("i1", 8, Duration::ZERO).await.unwrap();
    assert_eq!(
        keys(&third),
        ["m8", "m9", "m10", "m11"],
        "the rest of the mid band"
    );
    let fourth = q2.next_batch("i2", 8, Duration::ZERO).await.unwrap();
    assert_eq!(keys(&fourth), ["l0"]);
    assert!(
        q1.next_batch("i1", 8, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    for (q, batch) in [(&q1, &first), (&q2, &second), (&q1, &third), (&q2, &fourth)] {
        for c in batch.iter() {
            assert!(q.ack(c).await.unwrap(), "{} acked once", c.task.key);
        }
    }
    assert_eq!(q1.len().await.unwrap(), 0);
    assert!(!q1.contains("m3").await.unwrap());

    // Empty: waits up to `block` for work, then returns what arrived.
    let waiter = {
        let q2 = StreamQueue::new(&c2).await.unwrap();
        tokio::spawn(async move { q2.next_batch("i2", 8, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    q1.push_many(vec![task("late", 50)]).await.unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(keys(&got), ["late"]);
    assert!(q2.ack(&got[0]).await.unwrap());
    cleanup(&c1).await;
}

#[tokio::test]
async fn queue_serves_bands_in_priority_order_across_instances() {
    let ns = namespace("priority");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let q1 = StreamQueue::new(&c1).await.unwrap();
    let q2 = StreamQueue::new(&c2).await.unwrap();
    q1.push_many(vec![
        task("low", 10),
        task("mid", 50),
        task("high1", 90),
        task("high2", 67),
        task("mid2", 34),
    ])
    .await
    .unwrap();
    let mut order = Vec::new();
    for i in 0..5 {
        let (q, me) = if i % 2 == 0 { (&q1, "i1") } else { (&q2, "i2") };
        let c = q.next(me, Duration::ZERO).await.unwrap().unwrap();
        order.push((c.task.key.clone(), c.band));
        assert!(q.ack(&c).await.unwrap());
    }
    assert_eq!(
        order,
        [
            ("high1".to_owned(), Band::High),
            ("high2".to_owned(), Band::High),
            ("mid".to_owned(), Band::Mid),
            ("mid2".to_owned(), Band::Mid),
            ("low".to_owned(), Band::Low),
        ]
    );
    // FIFO within a band, seq assigned cluster-wide.
    q2.push_many(vec![task("x", 40)]).await.unwrap();
    q1.push_many(vec![task("y", 60)]).await.unwrap();
    let x = q1.next("i1", Duration::ZERO).await.unwrap().unwrap();
    let y = q1.next("i1", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((x.task.key.as_str(), y.task.key.as_str()), ("x", "y"));
    assert!(x.task.seq < y.task.seq);
    q1.ack(&x).await.unwrap();
    q1.ack(&y).await.unwrap();

    // Empty: blocks for the given time, then None.
    let start = Instant::now();
    assert!(
        q1.next("i1", Duration::from_millis(300))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );

    // A blocked consumer wakes as soon as another instance pushes.
    let q2 = Arc::new(q2);
    let waiter = tokio::spawn({
        let q2 = q2.clone();
        async move {
            let start = Instant::now();
            (
                q2.next("i2", Duration::from_secs(5)).await.unwrap(),
                start.elapsed(),
            )
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    q1.push_many(vec![task("late", 5)]).await.unwrap();
    let (got, took) = waiter.await.unwrap();
    assert_eq!(got.unwrap().task.key, "late");
    assert!(took < Duration::from_secs(2), "{took:?}");
    cleanup(&c1).await;
}

#[tokio::test]
async fn a_dead_consumers_task_is_reclaimed_by_another() {
    let ns = namespace("reclaim");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let dead = StreamQueue::new(&c1).await.unwrap();
    let live = StreamQueue::new(&c2).await.unwrap();
    live.push_many(vec![task("k", 80)]).await.unwrap();
    let taken = dead.next("dead", Duration::ZERO).await.unwrap().unwrap();
    drop(dead); // never acks

    assert!(
        live.next("live", Duration::ZERO).await.unwrap().is_none(),
        "not delivered twice"
    );
    assert!(
        live.reclaim("live", Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty(),
        "not idle long enough"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let back = live
        .reclaim("live", Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].task, taken.task);
    assert_eq!(back[0].id, taken.id);
    assert_eq!(back[0].deliveries, 2);
    assert!(!back[0].poisoned);
    assert!(
        live.contains("k").await.unwrap(),
        "still deduplicated while reclaimed"
    );
    assert!(live.ack(&back[0]).await.unwrap());
    assert_eq!(live.pending_count().await.unwrap(), 0);
    assert_eq!(live.keys_count().await.unwrap(), 0);
    cleanup(&c1).await;
}

#[tokio::test]
async fn touch_and_hand_back() {
    let ns = namespace("touch");
    let c = instance(&ns).await;
    let q = StreamQueue::new(&c).await.unwrap();
    q.push_many(vec![task("a", 50), task("b", 50)])
        .await
        .unwrap();
    let a = q.next("i1", Duration::ZERO).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    q.touch("i1", &a).await.unwrap();
    assert!(
        q.reclaim("i2", Duration::from_millis(200))
            .await
            .unwrap()
            .is_empty(),
        "touched"
    );
    // Handed back: tail of its band, key still deduplicated.
    assert!(q.hand_back(&a).await.unwrap());
    assert_eq!(q.push_many(vec![task("a", 50)]).await.unwrap(), [false]);
    let b = q.next("i1", Duration::ZERO).await.unwrap().unwrap();
    let a2 = q.next("i1", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((b.task.key.as_str(), a2.task.key.as_str()), ("b", "a"));
    assert_eq!(a2.task.seq, a.task.seq);
    q.ack(&b).await.unwrap();
    q.ack(&a2).await.unwrap();
    assert_eq!(q.keys_count().await.unwrap(), 0);
    cleanup(&c).await;
}

#[tokio::test]
async fn a_task_delivered_too_often_is_poison() {
    let ns = namespace("poison");
    let c = instance(&ns).await;
    let q = StreamQueue::new(&c).await.unwrap().with_max_deliveries(2);
    q.push_many(vec![task("p", 50)]).await.unwrap();
    let first = q.next("i1", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(first.deliveries, 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let second = q.reclaim("i2", Duration::from_millis(50)).await.unwrap();
    assert_eq!(
        (second.len(), second[0].deliveries, second[0].poisoned),
        (1, 2, false)
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let third = q.reclaim("i3", Duration::from_millis(50)).await.unwrap();
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].task.key, "p");
    assert_eq!(third[0].deliveries, 3);
    assert!(third[0].poisoned, "acked as failed and flagged");
    let stats = q.stats().await.unwrap();
    assert_eq!((stats.waiting, stats.in_flight), (0, 0));
    assert!(!q.contains("p").await.unwrap());
    assert!(!q.ack(&third[0]).await.unwrap(), "already acked");
    cleanup(&c).await;
}

#[tokio::test]
async fn the_queue_recovers_when_redis_lost_its_streams() {
    let ns = namespace("lost");
    let c = instance(&ns).await;
    let q = StreamQueue::new(&c).await.unwrap();
    // What a Redis restart without persistence leaves: nothing.
    cleanup(&c).await;
    assert_eq!(
        q.push_many(vec![task("a", 90), task("b", 10)])
            .await
            .unwrap(),
        [true, true]
    );
    let a = q.next("i1", Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(a.task.key, "a");
    cleanup(&c).await;
    // The blocking read path meets NOGROUP too.
    assert!(
        q.next("i1", Duration::from_millis(100))
            .await
            .unwrap()
            .is_none()
    );
    q.push_many(vec![task("c", 50)]).await.unwrap();
    assert_eq!(
        q.next("i1", Duration::from_millis(100))
            .await
            .unwrap()
            .unwrap()
            .task
            .key,
        "c"
    );
    q.ensure_groups().await.unwrap();
    cleanup(&c).await;
}

#[tokio::test]
async fn leases_are_exclusive_and_released_only_by_their_owner() {
    let ns = namespace("lease");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let l1 = Leases::new(&c1, "app:");
    let l2 = Leases::new(&c2, "app:");
    assert_eq!(
        l1.lease_key("user:1"),
        format!("{{app:user:1}}:warming:{{{ns}}}:lease")
    );
    assert_eq!(
        l1.lease_key("x{tag}y"),
        format!("{{tag}}:warming:{{{ns}}}:lease")
    );
    assert_eq!(hash_tag("app:x{tag}y"), "tag");
    assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");

    let ttl = Duration::from_secs(10);
    assert!(l1.try_acquire("user:1", "i1", ttl).await.unwrap());
    assert!(!l2.try_acquire("user:1", "i2", ttl).await.unwrap());
    assert!(!l2.release("user:1", "i2").await.unwrap(), "not the owner");
    assert!(!l2.renew("user:1", "i2", ttl).await.unwrap());
    assert_eq!(l2.holder("user:1").await.unwrap().as_deref(), Some("i1"));
    assert!(l1.renew("user:1", "i1", ttl).await.unwrap());
    assert!(l1.release("user:1", "i1").await.unwrap());
    assert!(l2.try_acquire("user:1", "i2", ttl).await.unwrap());

    // A lease whose owner died expires.
    assert!(
        l1.try_acquire("user:2", "i1", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(l2.try_acquire("user:2", "i2", ttl).await.unwrap());

    // Cluster-wide min_rewarm_interval.
    l1.mark_warmed("user:1", Duration::from_millis(300))
        .await
        .unwrap();
    l1.mark_warmed_many(&["user:3".into()], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(l2.recently_warmed("user:1").await.unwrap());
    let keys = [
        "user:1".to_owned(),
        "user:2".to_owned(),
        "user:3".to_owned(),
    ];
    assert_eq!(
        l2.recently_warmed_many(&keys).await.unwrap(),
        [true, false, true]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        l2.recently_warmed_many(&keys).await.unwrap(),
        [false, false, true]
    );
    cleanup(&c1).await;
}

#[tokio::test]
async fn each_firing_is_claimed_by_exactly_one_instance() {
    let ns = namespace("firing");
    let mut leases = Vec::new();
    for i in 0..3 {
        leases.push(FiringLease::new(&instance(&ns).await, &format!("i{i}")));
    }
    for firing in [1_764_000_000i64, 1_764_003_600] {
        let claims = futures::future::join_all(
            leases
                .iter()
                .map(|l| l.claim_firing("nightly", firing, Duration::from_secs(60))),
        )
        .await;
        let winners = claims
            .into_iter()
            .map(Result::unwrap)
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1, "firing {firing}");
    }
    cleanup(&instance(&ns).await).await;
}

/// Runs `per_instance` acquirers on each of `instances` limiters at `rps`
/// for `run`; returns every grant's time and the limiters.
async fn run_limiters(
    ns: &str,
    instances: usize,
    per_instance: usize,
    rps: u32,
    run: Duration,
) -> LimiterRun {
    let mut limiters = Vec::new();
    for _ in 0..instances {
        limiters.push(Arc::new(ClusterLimiter::new(&instance(ns).await, rps)));
    }
    let grants = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let deadline = Instant::now() + run;
    let probe = support::lateness::LatenessProbe::start();
    let mut tasks = Vec::new();
    for limiter in &limiters {
        for _ in 0..per_instance {
            let (limiter, grants) = (limiter.clone(), grants.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    limiter.acquire().await.unwrap();
                    grants.lock().push(Instant::now());
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut grants = std::mem::take(&mut *grants.lock());
    grants.sort();
    LimiterRun {
        grants,
        limiters,
        lateness: probe.stop().await,
    }
}

struct LimiterRun {
    /// When each `acquire` returned, sorted.
    grants: Vec<Instant>,
    limiters: Vec<Arc<ClusterLimiter>>,
    /// The worst wake-up lateness seen while the limiters ran.
    lateness: Duration,
}

impl LimiterRun {
    /// Grants a one-second window may hold beyond `rps` because the test
    /// stamped them late: those due up to `lateness` before the window.
    fn scheduling_slack(&self, rps: u32) -> usize {
        support::lateness::slack(rps, self.lateness)
    }
}

/// Most grants in any window of `window`.
fn max_in_window(grants: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..grants.len() {
        while j < grants.len() && grants[j] < grants[i] + window {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_origin_rate() {
    let ns = namespace("limiter");
    let rps = 30;
    let run = run_limiters(&ns, 3, 20, rps, Duration::from_secs(3)).await;
    let grants = &run.grants;
    let span = grants
        .last()
        .unwrap()
        .duration_since(grants[0])
        .as_secs_f64();
    let total = grants.len();
    // Upper bound: the rate from all three together, never more than rps
    // (plus the one burst slot and a little timer slack).
    assert!(
        total as f64 <= f64::from(rps) * span + 2.0,
        "{total} grants in {span:.3}s"
    );
    let per_second = max_in_window(grants, Duration::from_secs(1));
    let slack = run.scheduling_slack(rps);
    assert!(
        per_second <= rps as usize + 1 + slack,
        "{per_second} grants within one second (slack {slack} for wake-ups up to {:?} late)",
        run.lateness
    );
    // Work proceeds: well above zero (no lower bound on fairness).
    assert!(total >= 45, "only {total} grants in 3 s");
    cleanup(&instance(&ns).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_batch_slots_at_high_rates_and_keep_the_bound() {
    let ns = namespace("limiter-fast");
    let rps = 400;
    let run = run_limiters(&ns, 3, 40, rps, Duration::from_millis(2_500)).await;
    let (grants, limiters) = (&run.grants, &run.limiters);
    let per_second = max_in_window(grants, Duration::from_secs(1));
    // GRACE (10 ms) of lateness is 4 slots at 400/s.
    let slack = run.scheduling_slack(rps);
    assert!(
        per_second <= rps as usize + 6 + slack,
        "{per_second} grants within one second (slack {slack} for wake-ups up to {:?} late)",
        run.lateness
    );
    assert!(grants.len() >= 400, "only {} grants", grants.len());
    let trips: usize = limiters.iter().map(|l| l.reservations()).sum();
    assert!(
        trips * 3 < grants.len(),
        "{trips} round trips for {} grants: no batching",
        grants.len()
    );

    // 0 = unlimited: no Redis call.
    let limiter = &limiters[0];
    limiter.set_rate(0);
    let before = limiter.reservations();
    for _ in 0..1000 {
        assert!(!limiter.acquire().await.unwrap());
    }
    assert_eq!(limiter.reservations(), before);
    cleanup(&instance(&ns).await).await;
}

#[tokio::test]
async fn an_instance_that_stops_heartbeating_disappears() {
    let ns = namespace("members");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let (m1, m2) = (Membership::new(&c1), Membership::new(&c2));
    let info = |id: &str| InstanceInfo {
        id: id.into(),
        addr: format!("{id}.local:4000"),
        workers: 8,
        started_at: 1_764_000_000_000,
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let beating = m1.spawn_heartbeat(info("alive"), stop.clone());
    m2.heartbeat(&info("silent")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let live = m2.live().await.unwrap();
    assert_eq!(
        live.iter().map(|l| l.info.id.as_str()).collect::<Vec<_>>(),
        ["alive", "silent"]
    );
    assert_eq!(live[1].info, info("silent"));
    assert!(live[0].last_heartbeat > 1_700_000_000_000);

    tokio::time::sleep(Duration::from_millis(3_300)).await;
    let live = m2.live().await.unwrap();
    assert_eq!(
        live.iter().map(|l| l.info.id.as_str()).collect::<Vec<_>>(),
        ["alive"]
    );

    stop.cancel();
    beating.await.unwrap();
    assert!(m2.live().await.unwrap().is_empty(), "left on shutdown");
    cleanup(&c1).await;
}

#[tokio::test]
async fn a_shared_state_change_is_seen_by_another_instance_within_a_second() {
    let ns = namespace("state");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let (s1, s2) = (SharedState::new(&c1), SharedState::new(&c2));
    let mut changes = s2.watch().await.unwrap();

    let doc = serde_json::json!({"max_origin_rps": 50, "emergency_stop": false});
    assert_eq!(s1.put("tunables", &doc).await.unwrap(), 1);
    let name = tokio::time::timeout(Duration::from_millis(1_500), changes.next()).await;
    assert_eq!(
        name.expect("change not seen within 1.5 s").as_deref(),
        Some("tunables")
    );
    let got = s2.get("tunables").await.unwrap().unwrap();
    assert_eq!((got.version, got.value), (1, doc));

    // A change whose pub/sub message is lost is still seen, by the poll.
    let mut conn = c1.conn();
    let _: () = redis::pipe()
        .cmd("HSET")
        .arg(c1.namespace().key("state"))
        .arg("emergency")
        .arg(r#"{"stopped":true}"#)
        .ignore()
        .cmd("HINCRBY")
        .arg(c1.namespace().key("state:versions"))
        .arg("emergency")
        .arg(1)
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let name = tokio::time::timeout(Duration::from_millis(1_500), changes.next()).await;
    assert_eq!(
        name.expect("missed change not seen within 1.5 s")
            .as_deref(),
        Some("emergency")
    );
    #[derive(serde::Deserialize, PartialEq, Debug)]
    struct Emergency {
        stopped: bool,
    }
    assert_eq!(
        s1.get_json::<Emergency>("emergency").await.unwrap(),
        Some(Emergency { stopped: true })
    );

    assert!(s1.delete("tunables").await.unwrap());
    let name = tokio::time::timeout(Duration::from_millis(1_500), changes.next()).await;
    assert_eq!(name.unwrap().as_deref(), Some("tunables"));
    assert!(s2.get("tunables").await.unwrap().is_none());
    cleanup(&c1).await;
}

#[tokio::test]
async fn accesses_reach_every_other_instance_and_not_the_writer() {
    let ns = namespace("access");
    let (c1, c2) = (instance(&ns).await, instance(&ns).await);
    let (f1, f2) = (AccessFanout::new(&c1, "i1"), AccessFanout::new(&c2, "i2"));
    let stop = tokio_util::sync::CancellationToken::new();
    let (tx1, mut rx1) = tokio::sync::mpsc::channel(16);
    let (tx2, mut rx2) = tokio::sync::mpsc::channel(16);
    let r1 = f1.spawn_reader(tx1, stop.clone());
    let r2 = f2.spawn_reader(tx2, stop.clone());
    // Readers start at the end of the stream; let them find it.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sent: Vec<Access> = (0..1_200)
        .map(|i| Access {
            key: format!("user:{i}"),
            at_ms: 1_764_000_000_000 + i,
            // Completed warms travel the same way.
            warmed: (i % 3 == 0).then_some(60 + i as u32),
        })
        .collect();
    f1.publish(&sent).await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let batch = tokio::time::timeout(Duration::from_secs(3), rx2.recv())
            .await
            .expect("accesses not delivered")
            .unwrap();
        got.extend(batch);
    }
    assert_eq!(got, sent);

    f2.publish(&[Access {
        key: "from:i2".into(),
        at_ms: 7,
        warmed: None,
    }])
    .await
    .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(3), rx1.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        batch,
        [Access {
            key: "from:i2".into(),
            at_ms: 7,
            warmed: None
        }],
        "i1 sees only i2's access, not its own"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(1_200), rx2.recv())
            .await
            .is_err(),
        "the writer does not get its own accesses back"
    );
    stop.cancel();
    r1.await.unwrap();
    r2.await.unwrap();
    cleanup(&c1).await;
}

/// `ClusterLink::finish_key` records a key's end (warmed mark, job outcome,
/// lease release) and acks its claim in one pipeline, and, when Redis has
/// forgotten the scripts (a restart; here `SCRIPT FLUSH`), still records it
/// step by step, then acks. The pipelined ack never runs before the outcome
/// is recorded.
#[tokio::test]
async fn finishing_a_key_records_outcome_mark_and_release_even_without_scripts() {
    use warming::config::{Coordination, ServiceConfig, Tunables};
    use warming::protocol::KeyOutcome;
    use warming::warm::cluster_link::{ClusterLink, Mark};
    let ns = namespace("finish");
    let service = ServiceConfig {
        coordination: Coordination::Redis,
        coordination_url: Some(URL.into()),
        cluster_namespace: ns.clone(),
        instance_id: Some("i1".into()),
        ..ServiceConfig::default()
    };
    let link = ClusterLink::connect(&service, &Tunables::default())
        .await
        .unwrap();
    let keys: Vec<(String, &str)> = ["a", "b", "c"]
        .iter()
        .map(|k| (k.to_string(), "queued"))
        .collect();
    link.jobs
        .create("job-f", "api", Strategy::Selective, &keys)
        .await
        .unwrap();
    let tasks = ["a", "b", "c"]
        .iter()
        .map(|k| Task {
            job_id: "job-f".into(),
            ..task(k, 50)
        })
        .collect();
    link.queue.push_many(tasks).await.unwrap();
    let mut claims: std::collections::HashMap<String, warming::cluster::Claimed> = link
        .queue
        .next_batch("i1", 3, Duration::ZERO)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.task.key.clone(), c))
        .collect();
    assert_eq!(claims.len(), 3);

    // While the job shows "c" queued, the pipelined ack refuses.
    let mut pipe = redis::pipe();
    link.queue
        .add_ack_if_recorded(&mut pipe, &claims["c"], &link.jobs.job_key("job-f"));
    let got: Vec<i64> = pipe
        .query_async(&mut link.leases.connection())
        .await
        .unwrap();
    assert_eq!(got, [-1]);
    assert!(link.queue.contains("c").await.unwrap(), "not acked");

    // "a": no script loaded, so the pipeline fails and the steps run one by
    // one (loading the scripts); "b" and "c": the one-round-trip pipeline.
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut link.leases.connection())
        .await
        .unwrap();
    for key in ["a", "b", "c"] {
        assert!(link.take_lease(key, Duration::from_secs(30)).await.unwrap());
        let outcome = KeyOutcome::finished(key.into(), WarmStatus::Success, 1, 5, None);
        let claim = claims.remove(key).unwrap();
        link.finish_key(
            "job-f",
            &outcome,
            Some(Mark::Warmed(Duration::from_secs(30))),
            Some(&claim),
        )
        .await;
        assert!(link.leases.recently_warmed(key).await.unwrap(), "{key}");
        assert_eq!(link.leases.holder(key).await.unwrap(), None, "{key}");
        assert!(!link.queue.contains(key).await.unwrap(), "{key} acked");
        assert!(!link.queue.ack(&claim).await.unwrap(), "{key} acked once");
    }
    let job = link.jobs.view("job-f").await.unwrap().unwrap();
    assert_eq!((job.succeeded, job.queued), (3, 0), "{job:?}");
    assert_eq!(link.queue.len().await.unwrap(), 0);
    let coord = instance(&ns).await;
    cleanup(&coord).await;
}

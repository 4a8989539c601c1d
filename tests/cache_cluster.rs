//! The Redis Cluster backend against a real 3-node cluster that each test
//! starts for itself (`support::redis_cluster`, Debian `redis-server`):
//! writes spread over every node with their values and TTLs, reads, scans
//! across nodes, lease keys in their key's slot as the server computes it,
//! and the whole service warming into the cluster and reading back hits.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use support::origin::TestOrigin;
use support::redis_cluster::{NODES, RedisCluster};
use support::server::{TestServer, settings};
use warming::cache::redis_cluster::RedisClusterCache;
use warming::cache::{Cache, CacheEntry, lease_key};

fn entry(key: &str, value: &str, ttl: Duration) -> CacheEntry {
    CacheEntry {
        key: key.to_owned(),
        value: Bytes::from(value.to_owned()),
        ttl,
    }
}

async fn connect(url: &str, prefix: &str) -> RedisClusterCache {
    RedisClusterCache::connect(url, prefix.to_owned())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test cluster {url}: {e}"))
}

async fn dbsize(cluster: &RedisCluster, node: usize) -> i64 {
    redis::cmd("DBSIZE")
        .query_async(&mut cluster.node(node).await)
        .await
        .unwrap()
}

async fn keyslot(cluster: &RedisCluster, key: &str) -> i64 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut cluster.node(0).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn set_many_spreads_over_every_node_with_values_and_ttls() {
    let cluster = RedisCluster::start().await;
    let cache = connect(&cluster.url(), "app:").await;
    assert_eq!(cache.backend(), "redis-cluster");
    cache.ping().await.unwrap();
    cache.set_many(&[]).await.unwrap();

    // One batch spanning hundreds of slots, with two TTLs.
    let mut entries: Vec<_> = (0..300)
        .map(|i| entry(&format!("k{i}"), &format!("v{i}"), Duration::from_secs(60)))
        .collect();
    entries.push(entry("short", "s", Duration::from_secs(5)));
    // Keys that share a hash tag share a slot: one group, same pipeline.
    entries
        .extend((0..10).map(|i| entry(&format!("{{user:7}}:{i}"), "t", Duration::from_secs(60))));
    cache.set_many(&entries).await.unwrap();

    let mut total = 0;
    for node in 0..NODES {
        let n = dbsize(&cluster, node).await;
        assert!(n > 0, "node {node} holds no key");
        total += n;
    }
    assert_eq!(total, 311, "every entry stored exactly once");

    for i in 0..300 {
        let got = cache.get(&format!("k{i}")).await.unwrap();
        assert_eq!(got, Some(Bytes::from(format!("v{i}"))), "k{i}");
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
    assert_eq!(cache.get("missing").await.unwrap(), None);
    assert_eq!(cache.ttl("missing").await.unwrap(), None);
    // ttl_many groups by slot and answers in the order asked.
    let keys: Vec<String> = ["short", "missing", "k7", "{user:7}:3", "k299"]
        .map(String::from)
        .to_vec();
    let ttls = cache.ttl_many(&keys).await.unwrap();
    assert!(ttls[0].unwrap() <= Duration::from_secs(5), "{ttls:?}");
    assert_eq!(ttls[1], None);
    for t in &ttls[2..] {
        let t = t.expect("has a TTL");
        assert!(
            t > Duration::from_secs(55) && t <= Duration::from_secs(60),
            "{ttls:?}"
        );
    }
    assert_eq!(
        cache.get("{user:7}:3").await.unwrap(),
        Some(Bytes::from("t"))
    );

    // Stored under the prefix: the unprefixed key does not exist anywhere.
    let seed_only = connect(
        &format!("redis+cluster://127.0.0.1:{}", cluster.ports[2]),
        "",
    )
    .await;
    assert_eq!(seed_only.get("k0").await.unwrap(), None);
    assert_eq!(
        seed_only.get("app:k0").await.unwrap(),
        Some(Bytes::from("v0")),
        "a seed-only URL discovers the whole cluster"
    );

    // Overwrite replaces value and TTL.
    cache
        .set_many(&[entry("k0", "new", Duration::from_secs(10))])
        .await
        .unwrap();
    assert_eq!(cache.get("k0").await.unwrap(), Some(Bytes::from("new")));
    assert!(cache.ttl("k0").await.unwrap().unwrap() <= Duration::from_secs(10));
}

#[tokio::test]
async fn scan_merges_every_node_with_patterns_and_limit() {
    let cluster = RedisCluster::start().await;
    let cache = connect(&cluster.url(), "app[1]:").await;
    let keys: Vec<String> = (0..200).map(|i| format!("user:{i}")).collect();
    let mut entries: Vec<_> = keys
        .iter()
        .map(|k| entry(k, "v", Duration::from_secs(60)))
        .collect();
    entries.extend(
        ["a", "b", "x", "ab", "ba"]
            .iter()
            .map(|k| entry(k, "v", Duration::from_secs(60))),
    );
    cache.set_many(&entries).await.unwrap();
    // A neighbour whose prefix the unescaped glob `app[1]:*` would match.
    let neighbour = connect(&cluster.url(), "app1:").await;
    neighbour
        .set_many(&[entry("user:0", "n", Duration::from_secs(60))])
        .await
        .unwrap();

    let all = cache.scan("user:*", 10_000).await.unwrap();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "duplicates: {all:?}");
    assert_eq!(unique, keys.iter().cloned().collect::<BTreeSet<_>>());

    let found = |p: &'static str| {
        let cache = &cache;
        async move {
            cache
                .scan(p, 10_000)
                .await
                .unwrap()
                .into_iter()
                .collect::<BTreeSet<_>>()
        }
    };
    let set = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(found("?").await, set(&["a", "b", "x"]));
    assert_eq!(found("[ab]*").await, set(&["a", "b", "ab", "ba"]));
    assert_eq!(
        found("user:1?").await,
        (10..20).map(|i| format!("user:{i}")).collect()
    );
    assert_eq!(found("nothing:*").await, set(&[]));
    assert_eq!(
        neighbour.scan("*", 100).await.unwrap(),
        ["user:0"],
        "prefixes are literal"
    );

    for limit in [1, 3, 150] {
        let limited = cache.scan("user:*", limit).await.unwrap();
        assert_eq!(limited.len(), limit, "{limited:?}");
        assert!(limited.iter().all(|k| unique.contains(k)), "{limited:?}");
    }
    assert!(cache.scan("*", 0).await.unwrap().is_empty());
    assert!(
        cache.scan("{a,b}", 10).await.is_err(),
        "alternation refused"
    );
}

#[tokio::test]
async fn lease_keys_share_their_keys_slot_on_the_server() {
    let cluster = RedisCluster::start().await;
    let cases = [
        ("app:", "user:1:profile"),
        ("", "catalog:42"),
        ("app:", "{user:9}:cart"),
        ("{tenant}:", "k"),
        ("", "a{b"),
        ("", "a}b"),
        ("app:", "x{}y"),
        ("", "a{b{c}d"),
    ];
    for (prefix, key) in cases {
        let lease = lease_key(prefix, key);
        assert_eq!(
            keyslot(&cluster, &lease).await,
            keyslot(&cluster, &format!("{prefix}{key}")).await,
            "{prefix}{key} -> {lease}"
        );
    }
    for i in 0..100 {
        let key = format!("item:{i}");
        assert_eq!(
            keyslot(&cluster, &lease_key("p:", &key)).await,
            keyslot(&cluster, &format!("p:{key}")).await
        );
    }

    // A multi-key command over key and lease is accepted (no CROSSSLOT).
    let cache = connect(&cluster.url(), "app:").await;
    cache
        .set_many(&[entry("{user:9}:cart", "v", Duration::from_secs(60))])
        .await
        .unwrap();
    let client = redis::cluster::ClusterClient::new(vec![cluster.node_url(0)]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    for (key, stored) in [("{user:9}:cart", 1), ("plain", 0)] {
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("app:{key}"))
            .arg(lease_key("app:", key))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, stored, "{key}");
    }
}

#[tokio::test]
async fn service_warms_into_the_cluster_and_reads_hits_back() {
    let cluster = RedisCluster::start().await;
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.cache_url = cluster.url();
    s.service.cache_prefix = "svc:".into();
    s.service
        .validate()
        .expect("redis+cluster:// is an accepted cache URL");
    let server = TestServer::start(s).await;

    let (_, config) = server.get("/warm/config").await;
    assert_eq!(
        config["service"]["cache_backend"], "redis-cluster",
        "{config}"
    );
    let (status, ready) = server.get("/readyz").await;
    assert!(status.is_success(), "{ready}");

    let keys: Vec<String> = (0..200).map(|i| format!("product:{i}")).collect();
    let (status, body) = server.post("/warm/key", json!({ "keys": keys })).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["queued"], 200, "{body}");
    let job = server
        .wait_job(body["job_id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(job["succeeded"], 200, "{job}");
    assert_eq!(origin.requests(), 200);

    for node in 0..NODES {
        assert!(dbsize(&cluster, node).await > 0, "node {node} holds no key");
    }
    for key in &keys {
        let r = server
            .http
            .get(format!("{}/cache/{key}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(r.headers()["x-cache"], "hit", "{key}");
        assert_eq!(r.text().await.unwrap(), format!("value-of:{key}"));
    }
    assert_eq!(origin.requests(), 200, "every read was a hit");
}
